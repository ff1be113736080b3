package auth

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/lestrrat-go/jwx/v2/jwk"

	"invigil/app/apperr"
)

const (
	jwksTTL         = 10 * time.Minute // routine refresh, so removed keys stop working
	jwksMinInterval = 10 * time.Second // floor between retries and between forced refreshes
	jwksMaxBytes    = 1 << 20
)

// keyCache holds a JWKS fetched over HTTP. It refetches when the set is
// older than jwksTTL, and when a token names a kid it lacks (a rotated key),
// but never twice within jwksMinInterval, so tokens with garbage kids, or an
// unreachable Supabase, cannot turn into a stream of requests.
type keyCache struct {
	url    string
	client *http.Client
	clock  clockwork.Clock
	log    *slog.Logger

	mu          sync.Mutex
	set         jwk.Set       // nil until the first successful fetch
	fetchedAt   time.Time     // last successful fetch
	attemptedAt time.Time     // last fetch attempt, successful or not
	inflight    chan struct{} // non-nil while a fetch runs; closed when it ends
}

func newKeyCache(url string, client *http.Client, clock clockwork.Clock, log *slog.Logger) *keyCache {
	return &keyCache{url: url, client: client, clock: clock, log: log}
}

// key returns the key named kid.
func (c *keyCache) key(ctx context.Context, kid string) (jwk.Key, error) {
	set, fetched := c.get(ctx, false)
	if k, ok := lookupKeyID(set, kid); ok {
		return k, nil
	}
	// A set fetched just now is as fresh as it gets; otherwise the key may
	// have been added since (rotation), so look once more.
	if !fetched && set != nil {
		set, _ = c.get(ctx, true)
		if k, ok := lookupKeyID(set, kid); ok {
			return k, nil
		}
	}
	if set == nil {
		return nil, &apperr.Error{Code: apperr.Unauthenticated, Message: "signing keys unavailable"}
	}
	return nil, &apperr.Error{Code: apperr.Unauthenticated, Message: "unknown signing key"}
}

// get returns the current set, fetching it first when the last attempt is
// at least jwksMinInterval old and either force is set or the set is missing
// or older than jwksTTL. Only one fetch runs at a time; fetched reports
// whether this call ran one or waited for one. While a fetch runs, a caller
// that already has a set and is not forcing uses it.
func (c *keyCache) get(ctx context.Context, force bool) (set jwk.Set, fetched bool) {
	c.mu.Lock()
	if ch := c.inflight; ch != nil {
		set = c.set
		c.mu.Unlock()
		if set != nil && !force {
			return set, false
		}
		return c.wait(ctx, ch), true
	}
	now := c.clock.Now()
	stale := c.set == nil || now.Sub(c.fetchedAt) >= jwksTTL
	if (!force && !stale) || now.Sub(c.attemptedAt) < jwksMinInterval {
		set = c.set
		c.mu.Unlock()
		return set, false
	}
	ch := make(chan struct{})
	c.inflight, c.attemptedAt = ch, now
	c.mu.Unlock()

	fresh, err := c.fetch(ctx)

	c.mu.Lock()
	defer c.mu.Unlock()
	c.inflight = nil
	close(ch)
	if err != nil {
		c.log.WarnContext(ctx, "fetching JWKS failed; keeping the keys we had", "url", c.url, "err", err)
	} else {
		c.set, c.fetchedAt = fresh, c.clock.Now()
	}
	return c.set, true
}

func (c *keyCache) wait(ctx context.Context, ch <-chan struct{}) jwk.Set {
	select {
	case <-ch:
	case <-ctx.Done():
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.set
}

func (c *keyCache) fetch(ctx context.Context) (jwk.Set, error) {
	// Detached from the caller's cancellation: other callers may be waiting
	// on this fetch. The timeout still bounds it.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), httpTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.url, nil)
	if err != nil {
		return nil, fmt.Errorf("jwks request: %w", err)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := c.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("jwks get: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("jwks get: status %s", resp.Status)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, jwksMaxBytes+1))
	if err != nil {
		return nil, fmt.Errorf("jwks read: %w", err)
	}
	if len(body) > jwksMaxBytes {
		return nil, fmt.Errorf("jwks read: larger than %d bytes", jwksMaxBytes)
	}
	set, err := jwk.Parse(body)
	if err != nil {
		return nil, fmt.Errorf("jwks parse: %w", err)
	}
	return set, nil
}

func lookupKeyID(set jwk.Set, kid string) (jwk.Key, bool) {
	if set == nil {
		return nil, false
	}
	return set.LookupKeyID(kid)
}
