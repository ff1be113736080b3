package loadgen

import (
	"encoding/json"
	"errors"
	"strconv"
)

// A small JSON walker for the frames the load generator reads. Tutors
// receive every frame of their exam (whole results of 1,000 rows, from a
// server without deltas); decoding each into maps with encoding/json would
// make the load generator, not the server, the bottleneck of the run. The
// walker finds fields and array elements and hands out slices of the frame
// without copying or validating what it skips; the server writes valid JSON.

var errJSON = errors.New("malformed JSON")

func skipWS(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\n' || b[i] == '\r' || b[i] == '\t') {
		i++
	}
	return i
}

// skipString returns the index just past the string opening at b[i].
func skipString(b []byte, i int) (int, error) {
	for i++; i < len(b); i++ {
		switch b[i] {
		case '\\':
			i++
		case '"':
			return i + 1, nil
		}
	}
	return 0, errJSON
}

// skipValue returns the index just past the value that starts at b[i]
// (after any whitespace).
func skipValue(b []byte, i int) (int, error) {
	i = skipWS(b, i)
	if i >= len(b) {
		return 0, errJSON
	}
	switch c := b[i]; {
	case c == '"':
		return skipString(b, i)
	case c == '{' || c == '[':
		depth := 0
		for ; i < len(b); i++ {
			switch b[i] {
			case '"':
				j, err := skipString(b, i)
				if err != nil {
					return 0, err
				}
				i = j - 1
			case '{', '[':
				depth++
			case '}', ']':
				if depth--; depth == 0 {
					return i + 1, nil
				}
			}
		}
		return 0, errJSON
	case c == 't' || c == 'f' || c == 'n' || c == '-' || (c >= '0' && c <= '9'):
		j := i
		for j < len(b) && (b[j] >= 'a' && b[j] <= 'z' || b[j] >= '0' && b[j] <= '9' || b[j] == '-' || b[j] == '+' || b[j] == '.' || b[j] == 'E') {
			j++
		}
		return j, nil
	}
	return 0, errJSON
}

// eachField calls f with each member of the object b: the key as it is
// written between its quotes, and the value's bytes. f returns false to stop.
func eachField(b []byte, f func(key, val []byte) bool) error {
	i := skipWS(b, 0)
	if i >= len(b) || b[i] != '{' {
		return errJSON
	}
	i = skipWS(b, i+1)
	if i < len(b) && b[i] == '}' {
		return nil
	}
	for {
		if i >= len(b) || b[i] != '"' {
			return errJSON
		}
		end, err := skipString(b, i)
		if err != nil {
			return err
		}
		key := b[i+1 : end-1]
		i = skipWS(b, end)
		if i >= len(b) || b[i] != ':' {
			return errJSON
		}
		vs := skipWS(b, i+1)
		ve, err := skipValue(b, vs)
		if err != nil {
			return err
		}
		if !f(key, b[vs:ve]) {
			return nil
		}
		i = skipWS(b, ve)
		if i < len(b) && b[i] == ',' {
			i = skipWS(b, i+1)
			continue
		}
		if i < len(b) && b[i] == '}' {
			return nil
		}
		return errJSON
	}
}

// eachElem calls f with each element of the array b. null, or nothing (a
// field that is absent), is an empty array.
func eachElem(b []byte, f func(elem []byte)) error {
	i := skipWS(b, 0)
	if i == len(b) || string(b[i:]) == "null" {
		return nil
	}
	if i >= len(b) || b[i] != '[' {
		return errJSON
	}
	i = skipWS(b, i+1)
	if i < len(b) && b[i] == ']' {
		return nil
	}
	for {
		end, err := skipValue(b, i)
		if err != nil {
			return err
		}
		f(b[i:end])
		i = skipWS(b, end)
		if i < len(b) && b[i] == ',' {
			i = skipWS(b, i+1)
			continue
		}
		if i < len(b) && b[i] == ']' {
			return nil
		}
		return errJSON
	}
}

// field returns the value of key in the object b, or nil.
func field(b []byte, key string) []byte {
	var out []byte
	eachField(b, func(k, v []byte) bool {
		if string(k) == key {
			out = v
			return false
		}
		return true
	})
	return out
}

// str decodes a JSON string value; anything else is "".
func str(v []byte) string {
	if len(v) < 2 || v[0] != '"' {
		return ""
	}
	inner := v[1 : len(v)-1]
	for _, c := range inner {
		if c == '\\' {
			var s string
			json.Unmarshal(v, &s)
			return s
		}
	}
	return string(inner)
}

// num decodes an integer value; anything else is -1.
func num(v []byte) int64 {
	n, err := strconv.ParseInt(string(v), 10, 64)
	if err != nil {
		return -1
	}
	return n
}

// frame is what the load generator reads of a server frame; the raw parts
// point into the read buffer and are only valid until the next read.
type frame struct {
	Type, ID, Code string
	RetryAfterMs   int64  // error; 0 when absent
	Value          []byte // data, result
	Upsert, Remove []byte // delta
	Order          []byte // delta, optional
}

func parseFrame(b []byte) (frame, error) {
	var f frame
	err := eachField(b, func(k, v []byte) bool {
		switch string(k) {
		case "type":
			f.Type = str(v)
		case "id":
			f.ID = str(v)
		case "code":
			f.Code = str(v)
		case "retry_after_ms":
			f.RetryAfterMs = max(num(v), 0)
		case "value":
			f.Value = v
		case "upsert":
			f.Upsert = v
		case "remove":
			f.Remove = v
		case "order":
			f.Order = v
		}
		return true
	})
	if err == nil && f.Type == "" {
		err = errJSON
	}
	return f, err
}
