// Package args decodes and checks the JSON arguments of functions, queries
// and hooks, turning every problem into an invalid_argument error that
// names the field.
package args

import (
	"bytes"
	"encoding/json"
	"errors"
	"unicode/utf8"

	"invigil/app/apperr"
)

// Decode parses a function's or query's JSON arguments into v. Unknown
// fields are ignored (clients may be newer than the server); a wrong type or
// malformed JSON is invalid_argument, naming the field.
func Decode(raw json.RawMessage, v any) error {
	if len(bytes.TrimSpace(raw)) == 0 {
		raw = []byte("{}")
	}
	if err := json.Unmarshal(raw, v); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) && te.Field != "" {
			return apperr.New(apperr.InvalidArgument, "%s must be a %s", te.Field, jsonKind(te.Type.Kind().String()))
		}
		return apperr.New(apperr.InvalidArgument, "arguments must be a JSON object")
	}
	return nil
}

func jsonKind(goKind string) string {
	switch goKind {
	case "string":
		return "string"
	case "int", "int64", "float64":
		return "number"
	case "bool":
		return "boolean"
	case "slice":
		return "list"
	default:
		return "object"
	}
}

// ID checks a required identifier argument: present, at most 128 bytes,
// valid UTF-8 without control characters.
func ID(field, v string) error {
	if v == "" {
		return apperr.New(apperr.InvalidArgument, "%s is required", field)
	}
	return Text(field, v, 128)
}

// Text checks an optional text argument's length (in bytes) and encoding.
func Text(field, v string, maxBytes int) error {
	if len(v) > maxBytes {
		return apperr.New(apperr.InvalidArgument, "%s is longer than %d bytes", field, maxBytes)
	}
	if !utf8.ValidString(v) {
		return apperr.New(apperr.InvalidArgument, "%s is not valid UTF-8", field)
	}
	for _, r := range v {
		if r < 0x20 && r != '\n' && r != '\t' {
			return apperr.New(apperr.InvalidArgument, "%s has control characters", field)
		}
	}
	return nil
}

// Count checks a non-negative integer argument.
func Count(field string, v, limit int) error {
	if v < 0 || v > limit {
		return apperr.New(apperr.InvalidArgument, "%s must be between 0 and %d", field, limit)
	}
	return nil
}
