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
	jwksRefreshAt   = 8 * time.Minute  // a set this old is refreshed in the background
	jwksMinInterval = 10 * time.Second // floor between retries and between forced refreshes
	jwksMaxBytes    = 1 << 20
)

// keyCache holds a JWKS fetched over HTTP. A set older than jwksRefreshAt
// is refreshed in the background while requests go on with it, so no
// request waits for Supabase once the first set is in; a token that names a
// kid the set lacks (a rotated key) refetches at once. Never twice within
// jwksMinInterval, so tokens with garbage kids, or an unreachable Supabase,
// cannot turn into a stream of requests. A failed fetch, or an answer with
// no usable key, keeps the last good set.
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

// get returns the current set. Without a set, or with force, it fetches
// first (or waits for the fetch under way); with an ageing set it starts a
// background refresh and returns the set it has. Fetches are at least
// jwksMinInterval apart; fetched reports whether this call ran or waited
// for one.
func (c *keyCache) get(ctx context.Context, force bool) (set jwk.Set, fetched bool) {
	c.mu.Lock()
	set = c.set
	if ch := c.inflight; ch != nil {
		c.mu.Unlock()
		if set != nil && !force {
			return set, false
		}
		return c.wait(ctx, ch), true
	}
	now := c.clock.Now()
	due := now.Sub(c.attemptedAt) >= jwksMinInterval
	switch {
	case due && (set == nil || force):
		ch := c.startFetch(now)
		c.mu.Unlock()
		c.refresh(ch)
		return c.wait(ctx, ch), true
	case due && now.Sub(c.fetchedAt) >= jwksRefreshAt:
		go c.refresh(c.startFetch(now))
	}
	c.mu.Unlock()
	return set, false
}

// startFetch marks a fetch under way; c.mu held.
func (c *keyCache) startFetch(now time.Time) chan struct{} {
	ch := make(chan struct{})
	c.inflight, c.attemptedAt = ch, now
	return ch
}

// refresh fetches the set and keeps it if it has a usable key.
func (c *keyCache) refresh(ch chan struct{}) {
	fresh, err := c.fetch(context.Background())
	if err == nil && !usable(fresh) {
		err = fmt.Errorf("the key set has no usable signing key")
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.inflight = nil
	close(ch)
	if err != nil {
		c.log.Warn("fetching JWKS failed; keeping the keys we had", "url", c.url, "err", err)
		return
	}
	c.set, c.fetchedAt = fresh, c.clock.Now()
}

// usable reports whether set has a key that can verify a signature.
func usable(set jwk.Set) bool {
	for i := range set.Len() {
		k, ok := set.Key(i)
		if !ok || k.KeyID() == "" {
			continue
		}
		if u := k.KeyUsage(); u != "" && u != string(jwk.ForSignature) {
			continue
		}
		for _, spec := range asymmetric {
			if k.KeyType() == spec.kty {
				return true
			}
		}
	}
	return false
}

// settle waits for a fetch under way (tests).
func (c *keyCache) settle() {
	c.mu.Lock()
	ch := c.inflight
	c.mu.Unlock()
	if ch != nil {
		<-ch
	}
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
