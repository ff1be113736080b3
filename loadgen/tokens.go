package loadgen

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"time"

	"invigil/app/webhook"
)

// tokenSource gives a user's access token.
type tokenSource interface {
	Token(ctx context.Context, userID, role, name string) (string, error)
}

// hs256 signs Supabase-shaped tokens with the project's legacy JWT secret,
// the way Supabase Auth does: iss, aud "authenticated", sub, exp, the role
// in app_metadata and the display name in user_metadata.
type hs256 struct {
	secret []byte
	issuer string // "-": no iss claim
	exp    time.Time
}

var jwtHeader = base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"HS256","typ":"JWT"}`))

func (h hs256) Token(_ context.Context, userID, role, name string) (string, error) {
	now := time.Now()
	claims := map[string]any{
		"aud":           "authenticated",
		"sub":           userID,
		"iat":           now.Unix(),
		"exp":           h.exp.Unix(),
		"email":         userID + "@load.invigil.local",
		"role":          "authenticated", // Supabase's Postgres role, not ours
		"app_metadata":  map[string]any{"provider": "email", "role": role},
		"user_metadata": map[string]any{"full_name": name},
	}
	if h.issuer != "-" {
		claims["iss"] = h.issuer
	}
	payload, err := json.Marshal(claims)
	if err != nil {
		return "", err
	}
	signing := jwtHeader + "." + base64.RawURLEncoding.EncodeToString(payload)
	m := hmac.New(sha256.New, h.secret)
	m.Write([]byte(signing))
	return signing + "." + base64.RawURLEncoding.EncodeToString(m.Sum(nil)), nil
}

// demoTokens asks a --demo server's sign-in endpoint.
type demoTokens struct {
	base   string
	client *http.Client
}

func (d demoTokens) Token(ctx context.Context, userID, role, name string) (string, error) {
	body, _ := json.Marshal(map[string]string{"user_id": userID, "role": role, "name": name})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, d.base+"/demo/token", bytes.NewReader(body))
	if err != nil {
		return "", err
	}
	req.Header.Set("Content-Type", "application/json")
	res, err := d.client.Do(req)
	if err != nil {
		return "", err
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(res.Body, 1<<16))
	if res.StatusCode != http.StatusOK {
		return "", fmt.Errorf("POST /demo/token: %d %.200s (is the server running with --demo?)", res.StatusCode, b)
	}
	var out struct {
		Token string `json:"token"`
	}
	if err := json.Unmarshal(b, &out); err != nil || out.Token == "" {
		return "", fmt.Errorf("POST /demo/token: unexpected body %.200q", b)
	}
	return out.Token, nil
}

// postHook delivers a signed hook and returns "" or an error code: the
// server's code from its JSON error body, else http_<status> or io.
func postHook(ctx context.Context, client *http.Client, base, secret, path, msgID string, body []byte) (code, detail string) {
	hdr, err := webhook.Sign(secret, msgID, time.Now(), body)
	if err != nil {
		return "loadgen", err.Error()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+path, bytes.NewReader(body))
	if err != nil {
		return "loadgen", err.Error()
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	req.Header.Set("Content-Type", "application/json")
	res, err := client.Do(req)
	if err != nil {
		return "io", err.Error()
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(res.Body, 1<<16))
	if res.StatusCode == http.StatusOK {
		return "", ""
	}
	var e struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	}
	if json.Unmarshal(b, &e) == nil && e.Code != "" {
		return e.Code, e.Message
	}
	return fmt.Sprintf("http_%d", res.StatusCode), string(b)
}
