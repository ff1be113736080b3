package transport

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"invigil/app/apperr"
	"invigil/app/engine"
	"invigil/app/identity"
)

// errorBody is every HTTP error's body.
type errorBody struct {
	Code         apperr.Code `json:"code"`
	Message      string      `json:"message"`
	RetryAfterMs int64       `json:"retry_after_ms,omitempty"`
}

func (s *Server) httpError(err error, c echo.Context) {
	if c.Response().Committed {
		return
	}
	var he *echo.HTTPError
	if errors.As(err, &he) {
		code := map[int]apperr.Code{
			http.StatusNotFound: apperr.NotFound, http.StatusMethodNotAllowed: apperr.NotFound,
			http.StatusRequestEntityTooLarge: apperr.TooLarge, http.StatusBadRequest: apperr.InvalidArgument,
		}[he.Code]
		if code == "" {
			code = apperr.Internal
		}
		c.JSON(apperr.HTTPStatus(code), errorBody{Code: code, Message: http.StatusText(he.Code)})
		return
	}
	e := apperr.As(err)
	if e.Code == apperr.Internal {
		s.log.Error("request failed", "path", c.Path(), "err", err)
	}
	if e.RetryAfterMs > 0 {
		c.Response().Header().Set("Retry-After", strconv.FormatInt((e.RetryAfterMs+999)/1000, 10))
	}
	c.JSON(apperr.HTTPStatus(e.Code), errorBody{Code: e.Code, Message: e.Message, RetryAfterMs: e.RetryAfterMs})
}

// readBody reads at most MaxFrameBytes; a larger body is too_large.
func (s *Server) readBody(c echo.Context) ([]byte, error) {
	limit := int64(s.opts.MaxFrameBytes)
	b, err := io.ReadAll(io.LimitReader(c.Request().Body, limit+1))
	if err != nil {
		return nil, apperr.New(apperr.InvalidArgument, "unreadable body")
	}
	if int64(len(b)) > limit {
		return nil, apperr.New(apperr.TooLarge, "bodies are at most %d bytes", limit)
	}
	return b, nil
}

// bearer verifies the Authorization header; no header gives an anonymous
// caller (for public queries), a bad one an error.
func (s *Server) bearer(c echo.Context) (identity.User, error) {
	h := c.Request().Header.Get("Authorization")
	if h == "" {
		return identity.User{}, nil
	}
	token, ok := strings.CutPrefix(h, "Bearer ")
	if !ok {
		return identity.User{}, apperr.New(apperr.Unauthenticated, "Authorization must be Bearer <token>")
	}
	ctx, cancel := context.WithTimeout(c.Request().Context(), 10*time.Second)
	defer cancel()
	u, _, err := s.opts.Verifier.Verify(ctx, token)
	return u, err
}

func (s *Server) apiCall(c echo.Context) error {
	u, err := s.bearer(c)
	if err != nil {
		return err
	}
	if u.Anonymous() {
		return apperr.New(apperr.Unauthenticated, "send Authorization: Bearer <token>")
	}
	body, err := s.readBody(c)
	if err != nil {
		return err
	}
	v, err := s.invoke(engine.Caller{User: u}, c.Param("name"), body)
	if err != nil {
		return err
	}
	return c.JSONBlob(http.StatusOK, v)
}

func (s *Server) apiQuery(c echo.Context) error {
	u, err := s.bearer(c)
	if err != nil {
		return err
	}
	var addr net.Addr
	if a, err := net.ResolveTCPAddr("tcp", c.Request().RemoteAddr); err == nil {
		addr = a
	}
	if err := s.admitRead(u.ID, addr); err != nil {
		return err
	}
	if err := s.overloaded(); err != nil {
		return err
	}
	body, err := s.readBody(c)
	if err != nil {
		return err
	}
	v, err := s.opts.Engine.Get(c.Request().Context(), engine.Caller{User: u}, c.Param("name"), body)
	if err != nil {
		return err
	}
	return c.JSONBlob(http.StatusOK, v)
}

// admin serves GET /api/admin/{name} to admins only: who asks is checked
// before what, so the names are no secret worth probing for.
func (s *Server) admin(c echo.Context) error {
	u, err := s.bearer(c)
	if err != nil {
		return err
	}
	if u.Anonymous() {
		return apperr.New(apperr.Unauthenticated, "send Authorization: Bearer <token>")
	}
	if u.Role != identity.Admin {
		return apperr.New(apperr.Forbidden, "admins only")
	}
	h, ok := s.opts.Admin[c.Param("name")]
	if !ok {
		return apperr.New(apperr.NotFound, "no admin endpoint %q", c.Param("name"))
	}
	ctx, cancel := context.WithTimeout(c.Request().Context(), 10*time.Second)
	defer cancel()
	v, err := h(ctx)
	if err != nil {
		return err
	}
	c.Response().Header().Set("Cache-Control", "no-store")
	return c.JSON(http.StatusOK, v)
}

// hook serves POST /hooks/{name}: verified with Standard Webhooks, then
// handed to the registered handler, which ignores a replayed id.
func (s *Server) hook(c echo.Context) error {
	handler, ok := s.opts.Hooks[c.Param("name")]
	if !ok {
		return apperr.New(apperr.NotFound, "no hook %q", c.Param("name"))
	}
	if s.opts.HookAuth == nil {
		return apperr.New(apperr.Unauthenticated, "hooks are disabled: set INVIGIL_WEBHOOK_SECRET")
	}
	b, err := io.ReadAll(io.LimitReader(c.Request().Body, 1<<20+1))
	if err != nil {
		return apperr.New(apperr.InvalidArgument, "unreadable body")
	}
	if len(b) > 1<<20 {
		return apperr.New(apperr.TooLarge, "hook bodies are at most 1 MiB")
	}
	id, err := s.opts.HookAuth.Verify(c.Request().Header, b)
	if err != nil {
		return err
	}
	if err := handler(c.Request().Context(), id, b); err != nil {
		return err
	}
	return c.JSON(http.StatusOK, map[string]bool{"ok": true})
}

// countHook counts every delivery to a known hook by its outcome.
func (s *Server) countHook(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		err := next(c)
		name := c.Param("name")
		if _, ok := s.opts.Hooks[name]; ok {
			code := string(apperr.CodeOf(err))
			if code == "" {
				code = "ok"
			}
			s.metrics.Hooks.WithLabelValues(name, code).Inc()
		}
		return err
	}
}

func (s *Server) healthz(c echo.Context) error {
	ctx, cancel := context.WithTimeout(c.Request().Context(), 2*time.Second)
	defer cancel()
	if s.opts.Health != nil {
		if err := s.opts.Health(ctx); err != nil {
			s.log.Error("health check failed", "err", err)
			return c.JSON(http.StatusServiceUnavailable, errorBody{Code: apperr.Internal, Message: "the database does not answer"})
		}
	}
	return c.JSON(http.StatusOK, map[string]string{"status": "ok"})
}
