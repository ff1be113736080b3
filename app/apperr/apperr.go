// Package apperr is the one error type clients see: a code from the contract
// and a message safe to show. Anything else reaches a client as "internal".
package apperr

import (
	"errors"
	"fmt"
	"net/http"
)

// Code is one of the contract's error codes.
type Code string

const (
	Unauthenticated Code = "unauthenticated"
	Forbidden       Code = "forbidden"
	InvalidArgument Code = "invalid_argument"
	NotFound        Code = "not_found"
	Conflict        Code = "conflict"
	RateLimited     Code = "rate_limited"
	TooLarge        Code = "too_large"
	Internal        Code = "internal"
)

// Error is an error with a client-facing code.
type Error struct {
	Code         Code
	Message      string
	RetryAfterMs int64 // only with RateLimited
}

func (e *Error) Error() string { return string(e.Code) + ": " + e.Message }

// New returns an *Error with a formatted message.
func New(code Code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// As returns err as an *Error; anything that is not one becomes Internal with
// a generic message, so no internal detail leaks to a client.
func As(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	return &Error{Code: Internal, Message: "internal error"}
}

// CodeOf returns err's code, Internal for a plain error, "" for nil.
func CodeOf(err error) Code {
	if err == nil {
		return ""
	}
	return As(err).Code
}

var statuses = map[Code]int{
	Unauthenticated: http.StatusUnauthorized,
	Forbidden:       http.StatusForbidden,
	InvalidArgument: http.StatusBadRequest,
	NotFound:        http.StatusNotFound,
	Conflict:        http.StatusConflict,
	RateLimited:     http.StatusTooManyRequests,
	TooLarge:        http.StatusRequestEntityTooLarge,
	Internal:        http.StatusInternalServerError,
}

// HTTPStatus maps a code to its HTTP status.
func HTTPStatus(c Code) int {
	if s, ok := statuses[c]; ok {
		return s
	}
	return http.StatusInternalServerError
}
