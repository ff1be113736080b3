package archive

import (
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// outcome is what one request got.
type outcome struct {
	status        int    // 0: no answer (network error, timeout, bad request)
	answer        string // the start of a non-2xx answer's body
	retryAfter    time.Duration
	hasRetryAfter bool
	err           error
}

func (o outcome) ok() bool { return o.err == nil && o.status/100 == 2 }

// lasting reports a refusal that retrying will not fix: a 4xx other than
// 408 (timeout) and 429 (rate limited), or a redirect (a wrong URL).
func (o outcome) lasting() bool {
	switch {
	case o.status == http.StatusRequestTimeout, o.status == http.StatusTooManyRequests:
		return false
	case o.status/100 == 4, o.status/100 == 3:
		return true
	}
	return false
}

// class is the attempt's label in invigil_outbox_attempts_total.
func (o outcome) class() string {
	if o.status == 0 {
		return "network"
	}
	if c := o.status / 100; c >= 2 && c <= 5 {
		return fmt.Sprintf("%dxx", c)
	}
	return "other"
}

// do sends req and reads what the outcome needs.
func do(client *http.Client, req *http.Request, now func() time.Time) outcome {
	res, err := client.Do(req)
	if err != nil {
		// Without the URL: INVIGIL_REMINDER_URL may carry a token in its
		// query, and this ends up in logs and last_error.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = fmt.Errorf("%s %s: %w", ue.Op, req.URL.Scheme+"://"+req.URL.Host, ue.Err)
		}
		return outcome{err: err}
	}
	defer res.Body.Close()
	out := outcome{status: res.StatusCode}
	out.retryAfter, out.hasRetryAfter = parseRetryAfter(res.Header.Get("Retry-After"), now())
	if out.status/100 != 2 {
		b, _ := io.ReadAll(io.LimitReader(res.Body, 2048))
		out.answer = string(b)
		out.err = errors.New(http.StatusText(out.status))
	}
	io.Copy(io.Discard, io.LimitReader(res.Body, 64<<10)) // lets the connection be reused
	return out
}

// parseRetryAfter reads Retry-After (RFC 9110 §10.2.3): a number of seconds
// or an HTTP date, relative to now. A date in the past is 0.
func parseRetryAfter(v string, now time.Time) (time.Duration, bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	if s, err := strconv.ParseUint(v, 10, 64); err == nil {
		const week = 7 * 24 * 3600
		return time.Duration(min(s, week)) * time.Second, true
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(0, t.Sub(now)), true
	}
	return 0, false
}

// backoff is base·2^attempts, at most ceiling.
func backoff(base, ceiling time.Duration, attempts int) time.Duration {
	b := base
	for range min(attempts, 40) {
		if b *= 2; b >= ceiling {
			return ceiling
		}
	}
	return min(b, ceiling)
}

// equalJitter is uniformly in [d/2, d): retries of items that failed
// together spread out, and none comes sooner than half its backoff.
func equalJitter(d time.Duration) time.Duration {
	if d <= 1 {
		return d
	}
	return d/2 + rand.N(d-d/2)
}
