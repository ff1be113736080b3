// Package archivetest is a stand-in for Supabase REST (PostgREST behind
// Supabase's gateway) as invigil's outbox uses it: it checks every request
// exactly (method, path, query, headers, the rows' columns), answers from a
// script (accept, 500, 429 with Retry-After, a lasting 4xx, or hang until
// the client gives up), and keeps the accepted rows by their upsert key, so
// a test can say that every archive arrived exactly once.
package archivetest

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
)

// ServiceKey is the service role key the stand-in expects by default.
const ServiceKey = "service-role-key-for-tests"

// Table is an archive table as the Supabase migration creates it.
type Table struct {
	OnConflict []string // the upsert key, in the order of ?on_conflict=
	Columns    []string // every row carries exactly these
}

// Tables are invigil's archive tables (supabase/migrations/…_invigil_archive.sql).
var Tables = map[string]Table{
	"proctoring_summaries": {
		OnConflict: []string{"exam_id", "student_id"},
		Columns: []string{"exam_id", "student_id", "status", "started_at", "ended_at", "duration_s",
			"violation_count", "violations_by_type", "disconnects"},
	},
	"chat_messages": {
		OnConflict: []string{"id"},
		Columns: []string{"id", "session_id", "scope", "exam_id", "student_id", "client_msg_id", "sender_id",
			"sender_name", "sender_role", "body", "attachments", "read_by", "created_at"},
	},
}

// Request is one well-formed request the stand-in received.
type Request struct {
	Table string
	Rows  []map[string]any
	Keys  []string // each row's upsert key, "exam_id|student_id" style
	At    time.Time
}

// Reply is how the stand-in answers a request.
type Reply struct {
	Status     int    // 0: 201
	RetryAfter string // the Retry-After header, when set
	Body       string
	Hang       bool // answer nothing until the client gives up
}

// Supabase is the stand-in. Its methods are safe for concurrent use.
type Supabase struct {
	URL string
	Key string

	t   testing.TB
	srv *httptest.Server

	mu       sync.Mutex
	answer   func(Request) Reply
	requests []Request
	replies  []int // status answered per request; 0 for a hang
	rows     map[string]map[string]map[string]any
	accepted map[string]map[string]int
	arrived  chan struct{}
}

// New starts a stand-in that accepts everything; Close it (t.Cleanup does).
func New(t testing.TB) *Supabase {
	s := &Supabase{t: t, Key: ServiceKey, rows: map[string]map[string]map[string]any{},
		accepted: map[string]map[string]int{}, arrived: make(chan struct{}, 1<<16)}
	s.srv = httptest.NewServer(s)
	s.URL = s.srv.URL
	t.Cleanup(s.Close)
	return s
}

// Close stops the stand-in (after hanging requests give up).
func (s *Supabase) Close() { s.srv.Close() }

// Answer sets the script: f decides each reply (nil: accept all).
func (s *Supabase) Answer(f func(Request) Reply) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.answer = f
}

// Always answers every request with r.
func Always(r Reply) func(Request) Reply { return func(Request) Reply { return r } }

func (s *Supabase) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	req, problem := s.check(r)
	if problem != "" {
		s.t.Errorf("Supabase stand-in: %s: %s %s %v", problem, r.Method, r.URL, r.Header)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		io.WriteString(w, `{"code":"PGRST000","message":"`+problem+`"}`)
		return
	}
	s.mu.Lock()
	reply := Reply{}
	if s.answer != nil {
		reply = s.answer(req)
	}
	if reply.Status == 0 {
		reply.Status = http.StatusCreated
	}
	if reply.Hang {
		s.requests = append(s.requests, req)
		s.replies = append(s.replies, 0)
		s.mu.Unlock()
		<-r.Context().Done() // until the client gives up
		return
	}
	s.requests = append(s.requests, req)
	s.replies = append(s.replies, reply.Status)
	if reply.Status/100 == 2 {
		for i, row := range req.Rows {
			if s.rows[req.Table] == nil {
				s.rows[req.Table], s.accepted[req.Table] = map[string]map[string]any{}, map[string]int{}
			}
			s.rows[req.Table][req.Keys[i]] = row
			s.accepted[req.Table][req.Keys[i]]++
		}
	}
	s.mu.Unlock()
	if reply.RetryAfter != "" {
		w.Header().Set("Retry-After", reply.RetryAfter)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(reply.Status)
	io.WriteString(w, reply.Body)
	select {
	case s.arrived <- struct{}{}:
	default:
	}
}

// check parses r as PostgREST would and says what is wrong with it, if anything.
func (s *Supabase) check(r *http.Request) (Request, string) {
	req := Request{At: time.Now()}
	if r.Method != http.MethodPost {
		return req, "method is not POST"
	}
	table, ok := strings.CutPrefix(r.URL.Path, "/rest/v1/")
	spec, known := Tables[table]
	if !ok || !known {
		return req, "path is not /rest/v1/<archive table>"
	}
	req.Table = table
	checks := []struct {
		ok   bool
		what string
	}{
		{r.URL.RawQuery == "on_conflict="+strings.Join(spec.OnConflict, ","), "query is not on_conflict=" + strings.Join(spec.OnConflict, ",")},
		{r.Header.Get("apikey") == s.Key, "apikey is not the service role key"},
		{r.Header.Get("Authorization") == "Bearer "+s.Key, "Authorization is not Bearer <service role key>"},
		{r.Header.Get("Content-Type") == "application/json", "Content-Type is not application/json"},
		{r.Header.Get("Prefer") == "resolution=merge-duplicates,return=minimal", "Prefer is not resolution=merge-duplicates,return=minimal"},
	}
	for _, c := range checks {
		if !c.ok {
			return req, c.what
		}
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return req, "unreadable body"
	}
	if err := json.Unmarshal(body, &req.Rows); err != nil || len(req.Rows) == 0 {
		return req, "body is not a non-empty JSON array of rows"
	}
	for _, row := range req.Rows {
		cols := make([]string, 0, len(row))
		for c := range row {
			cols = append(cols, c)
		}
		sort.Strings(cols)
		want := slices.Sorted(slices.Values(spec.Columns))
		if !slices.Equal(cols, want) {
			return req, "row columns are " + strings.Join(cols, ",") + ", want " + strings.Join(want, ",")
		}
		var key []string
		for _, c := range spec.OnConflict {
			v, ok := row[c].(string)
			if !ok || v == "" {
				return req, "row has no " + c
			}
			key = append(key, v)
		}
		req.Keys = append(req.Keys, strings.Join(key, "|"))
	}
	return req, ""
}

// Requests are the well-formed requests received so far, in order.
func (s *Supabase) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.requests)
}

// Replies are the statuses answered so far, in order (0: a hang).
func (s *Supabase) Replies() []int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.replies)
}

// Row is the row stored under key in table (nil if none).
func (s *Supabase) Row(table, key string) map[string]any {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.rows[table][key]
}

// Accepted counts, per upsert key, the accepted requests that carried it.
func (s *Supabase) Accepted(table string) map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]int{}
	for k, n := range s.accepted[table] {
		out[k] = n
	}
	return out
}

// WaitRows waits (in real time, up to d) until table holds n rows; it
// reports whether it did.
func (s *Supabase) WaitRows(table string, n int, d time.Duration) bool {
	deadline := time.After(d)
	for {
		s.mu.Lock()
		have := len(s.rows[table])
		s.mu.Unlock()
		if have >= n {
			return true
		}
		select {
		case <-s.arrived:
		case <-deadline:
			return false
		case <-time.After(50 * time.Millisecond):
		}
	}
}
