package archive

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"github.com/jonboulle/clockwork"

	"invigil/app/webhook"
	"invigil/store"
)

// A Sink turns outbox items into the one HTTP request that delivers them.
type Sink struct {
	// Request builds the request for items: one, or several of the same
	// target and on_conflict when CanBatch allowed it.
	Request func(ctx context.Context, items []store.OutboxItem) (*http.Request, error)
	// Batch lists the targets whose items may share a request.
	Batch []string
}

// CanBatch reports whether items of target may share a request.
func (s Sink) CanBatch(target string) bool { return slices.Contains(s.Batch, target) }

// Supabase upserts through Supabase REST (PostgREST behind Supabase's
// gateway): POST /rest/v1/<table>?on_conflict=<cols> with the service role
// key and Prefer: resolution=merge-duplicates. Items of a batch target
// share a request: their rows in one array.
func Supabase(baseURL, serviceRoleKey string, batch ...string) Sink {
	baseURL = strings.TrimRight(baseURL, "/")
	return Sink{Batch: batch, Request: func(ctx context.Context, items []store.OutboxItem) (*http.Request, error) {
		body, err := joinRows(items)
		if err != nil {
			return nil, err
		}
		// Commas stay as they are: PostgREST's documented form.
		conflict := strings.ReplaceAll(url.QueryEscape(items[0].OnConflict), "%2C", ",")
		u := baseURL + "/rest/v1/" + url.PathEscape(items[0].Target) + "?on_conflict=" + conflict
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(body))
		if err != nil {
			return nil, err
		}
		req.Header.Set("apikey", serviceRoleKey)
		req.Header.Set("Authorization", "Bearer "+serviceRoleKey)
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Prefer", "resolution=merge-duplicates,return=minimal")
		return req, nil
	}}
}

// joinRows is the items' rows as one JSON array (one item: its body as is).
func joinRows(items []store.OutboxItem) ([]byte, error) {
	if len(items) == 1 {
		return []byte(items[0].Body), nil
	}
	var all []json.RawMessage
	for _, it := range items {
		var rows []json.RawMessage
		if err := json.Unmarshal([]byte(it.Body), &rows); err != nil {
			return nil, fmt.Errorf("outbox %d: body is not a JSON array: %w", it.ID, err)
		}
		all = append(all, rows...)
	}
	return json.Marshal(all)
}

// SignedPost posts each item's body to url, signed as invigil's inbound
// hooks are (Standard Webhooks) with the first of secrets, webhook-id the
// item's MsgID: a receiver drops a repeat. Each attempt is signed anew
// with its own timestamp.
func SignedPost(url, secrets string, clock clockwork.Clock) (Sink, error) {
	secret := webhook.Primary(secrets)
	if _, err := webhook.Sign(secret, "check", clock.Now(), nil); err != nil {
		return Sink{}, fmt.Errorf("signing needs INVIGIL_WEBHOOK_SECRET: %w", err)
	}
	return Sink{Request: func(ctx context.Context, items []store.OutboxItem) (*http.Request, error) {
		it := items[0]
		h, err := webhook.Sign(secret, it.MsgID, clock.Now(), []byte(it.Body))
		if err != nil {
			return nil, fmt.Errorf("outbox %d: %w", it.ID, err)
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(it.Body))
		if err != nil {
			return nil, err
		}
		for k, v := range h {
			req.Header[k] = v
		}
		req.Header.Set("Content-Type", "application/json")
		return req, nil
	}}, nil
}
