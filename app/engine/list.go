package engine

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"slices"

	"invigil/store"
)

// List describes a list query: its rows, their documented order and which
// of them the result keeps.
type List struct {
	// Key is the list's key: rows a write touched under it are re-read by
	// id and patched in; a whole-key touch re-runs the list whole.
	Key string
	// All reads every row that belongs to the list, in any order.
	All func(ctx context.Context) ([]Row, error)
	// Fetch reads the rows among ids that belong to the list now; an id it
	// does not return has left the list.
	Fetch func(ctx context.Context, ids []string) ([]Row, error)
	// Carried, when set, makes a row of a value a write carried with its
	// touch (store.Tx.TouchRow) and reports whether the row belongs to the
	// list; such rows are not read again. A heartbeat patches the grid from
	// its own UPDATE … RETURNING, with no read at all.
	Carried func(v any) (Row, bool)
	// Rows are in ascending (Order, ID) order, descending with Desc. Limit,
	// when positive, keeps the first Limit rows of that order, or the last
	// Limit with Tail.
	Desc  bool
	Limit int
	Tail  bool
	// Arrange, when set, is given the kept rows in order after every change
	// and may fill in what depends on a row's place (ranks); rows whose
	// encoding it changes are pushed too.
	Arrange func(rows []Row)
}

// changed reads the touched rows as they are now: the values writes carried
// where the list can use them, the others with Fetch. It returns every
// touched id, the rows among them that belong to the list, and how many
// came carried.
func (l *List) changed(ctx context.Context, touched store.Rows) (ids []string, rows []Row, carried int, err error) {
	ids = make([]string, 0, len(touched))
	var read []string
	for id, v := range touched {
		ids = append(ids, id)
		if v == nil || l.Carried == nil {
			read = append(read, id)
			continue
		}
		carried++
		if row, ok := l.Carried(v); ok {
			if row.ID != id {
				return nil, nil, 0, fmt.Errorf("list %s: row %q carried under id %q", l.Key, row.ID, id)
			}
			rows = append(rows, row)
		}
	}
	if len(read) > 0 {
		fetched, err := l.Fetch(ctx, read)
		if err != nil {
			return nil, nil, 0, err
		}
		rows = append(rows, fetched...)
	}
	return ids, rows, carried, nil
}

// Row is one row of a list.
type Row struct {
	ID    string // the row's "_id"
	Order string // its documented order; rows sort by (Order, ID)
	Value any    // encoded as the row; it carries "_id": ID
}

// rowState is a kept row: never changed once published (a change makes a
// new one), so a reader under the instance lock sees a consistent row.
type rowState struct {
	id, order string
	value     any // kept only for Arrange
	raw       json.RawMessage
}

// listState is a list as last published: its kept rows in order.
type listState struct {
	rows     []*rowState // in the documented order
	byID     map[string]*rowState
	complete bool // rows holds every row of the list (none lies past Limit)
}

// before reports whether a ranks before b: earlier in the order the result
// keeps from (its head, or its tail with Tail).
func (l *List) before(a, b *rowState) bool { return l.rank(a, b) < 0 }

func (l *List) rank(a, b *rowState) int {
	c := l.compare(a, b)
	if l.Tail {
		return -c
	}
	return c
}

// compare is the documented order.
func (l *List) compare(a, b *rowState) int {
	c := cmp.Or(cmp.Compare(a.order, b.order), cmp.Compare(a.id, b.id))
	if l.Desc {
		return -c
	}
	return c
}

// encode makes the kept form of rows.
func (l *List) encode(rows []Row) ([]*rowState, error) {
	out := make([]*rowState, len(rows))
	for i, r := range rows {
		raw, err := json.Marshal(r.Value)
		if err != nil {
			return nil, fmt.Errorf("encode row %s: %w", r.ID, err)
		}
		rs := &rowState{id: r.ID, order: r.Order, raw: raw}
		if l.Arrange != nil {
			rs.value = r.Value
		}
		out[i] = rs
	}
	return out, nil
}

// build makes the list from all of its rows.
func (l *List) build(rows []Row) (*listState, error) {
	kept, err := l.encode(rows)
	if err != nil {
		return nil, err
	}
	slices.SortFunc(kept, l.rank)
	complete := true
	if l.Limit > 0 && len(kept) > l.Limit {
		kept, complete = kept[:l.Limit], false
	}
	return l.finish(kept, complete)
}

// patch applies a change of the rows touched (those fetched belong to the
// list now; the others left it) to old, and says what changed. ok is false
// when the new list cannot be judged from the kept rows alone: it needs a
// whole run. A patch costs the touched rows plus one pass over the kept
// ones; when its delta is not empty it takes over old's index, and old
// must not be patched or diffed again.
func (l *List) patch(old *listState, touched []string, fetched []Row) (ls *listState, d *Delta, ok bool, err error) {
	fresh, err := l.encode(fetched)
	if err != nil {
		return nil, nil, false, err
	}
	if ls, d, ok := l.inPlace(old, touched, fresh); ok {
		return ls, d, true, nil
	}
	gone := make(map[string]bool, len(touched))
	for _, id := range touched {
		gone[id] = true
	}
	// The kept rows in rank order, without the touched ones; then the
	// touched rows that belong, each put in its place.
	ranked := make([]*rowState, 0, len(old.rows)+len(fresh))
	for _, r := range old.rows {
		if !gone[r.id] {
			ranked = append(ranked, r)
		}
	}
	if l.Tail {
		slices.Reverse(ranked)
	}
	var boundary *rowState // the last row the old result ranked: what lies past it is unknown
	if !old.complete && len(old.rows) > 0 {
		boundary = old.rows[0]
		if !l.Tail {
			boundary = old.rows[len(old.rows)-1]
		}
	}
	inserted := make(map[string]*rowState, len(fresh))
	for _, r := range fresh {
		if !gone[r.id] {
			continue // not asked for; the query returned it anyway
		}
		if boundary != nil && l.before(boundary, r) {
			continue // past the boundary: its place among unknown rows is unknown
		}
		i, _ := slices.BinarySearchFunc(ranked, r, l.rank)
		ranked = slices.Insert(ranked, i, r)
		inserted[r.id] = r
	}
	complete := old.complete
	var trimmed []*rowState
	switch {
	case l.Limit <= 0:
	case len(ranked) > l.Limit:
		ranked, trimmed, complete = ranked[:l.Limit], ranked[l.Limit:], false
	case !complete && len(ranked) < l.Limit:
		return nil, nil, false, nil // a row left the top: the next one is not kept here
	}
	if l.Arrange != nil {
		// Places (ranks) may change rows nobody touched: compare them all.
		ls, err = l.finish(ranked, complete)
		if err != nil {
			return nil, nil, false, err
		}
		return ls, diff(old, ls), true, nil
	}
	if l.Tail {
		slices.Reverse(ranked)
	}
	// What changed: only touched rows, and rows trimmed off the end.
	d = &Delta{}
	left := make(map[string]bool, len(touched)+len(trimmed))
	for _, r := range trimmed {
		delete(inserted, r.id)
		if old.byID[r.id] != nil {
			left[r.id] = true
		}
	}
	for _, id := range touched {
		if inserted[id] == nil && old.byID[id] != nil {
			left[id] = true
		}
	}
	for _, r := range ranked { // the new order, so upserts come in it
		if inserted[r.id] == nil {
			continue
		}
		if o := old.byID[r.id]; o == nil || !bytes.Equal(o.raw, r.raw) {
			d.Upsert = append(d.Upsert, RowJSON{ID: r.id, Raw: r.raw})
		}
	}
	for _, r := range old.rows {
		if left[r.id] {
			d.Remove = append(d.Remove, r.id)
		}
	}
	if moved(old.rows, ranked, left) {
		d.Order = make([]string, len(ranked))
		for i, r := range ranked {
			d.Order[i] = r.id
		}
	}
	if d.Empty() {
		return old, d, true, nil
	}
	byID := old.byID
	old.byID = nil // taken over: see above
	for id := range left {
		delete(byID, id)
	}
	for id, r := range inserted {
		byID[id] = r
	}
	return &listState{rows: ranked, byID: byID, complete: complete}, d, true, nil
}

// inPlace is patch's fast path for the common change (a heartbeat): every
// touched row is kept and keeps its place (same order key), so the new
// list is the old one with those rows swapped, found by binary search.
func (l *List) inPlace(old *listState, touched []string, fresh []*rowState) (*listState, *Delta, bool) {
	if l.Arrange != nil || len(fresh) != len(touched) {
		return nil, nil, false
	}
	at := make([]int, len(fresh))
	for i, r := range fresh {
		o := old.byID[r.id]
		if o == nil || o.order != r.order {
			return nil, nil, false
		}
		j, found := slices.BinarySearchFunc(old.rows, o, l.compare)
		if !found || old.rows[j] != o {
			return nil, nil, false
		}
		at[i] = j
	}
	d := &Delta{}
	for _, r := range fresh {
		if !bytes.Equal(old.byID[r.id].raw, r.raw) {
			d.Upsert = append(d.Upsert, RowJSON{ID: r.id, Raw: r.raw})
		}
	}
	if d.Empty() {
		return old, d, true
	}
	rows := slices.Clone(old.rows)
	byID := old.byID
	old.byID = nil // taken over: see patch
	for i, r := range fresh {
		rows[at[i]] = r
		byID[r.id] = r
	}
	if len(d.Upsert) > 1 { // in the list's order, as the other paths give them
		slices.SortFunc(d.Upsert, func(a, b RowJSON) int { return l.compare(byID[a.ID], byID[b.ID]) })
	}
	return &listState{rows: rows, byID: byID, complete: old.complete}, d, true
}

// moved reports whether the ids of rows, once those in left are dropped
// from old, are not already in that order (an id appeared or moved).
func moved(old, rows []*rowState, left map[string]bool) bool {
	i := 0
	for _, r := range old {
		if left[r.id] {
			continue
		}
		if i >= len(rows) || rows[i].id != r.id {
			return true
		}
		i++
	}
	return i != len(rows)
}

// finish puts rows (in rank order) in the documented order, lets Arrange
// see them, and indexes them.
func (l *List) finish(rows []*rowState, complete bool) (*listState, error) {
	if l.Tail {
		slices.Reverse(rows)
	}
	if l.Arrange != nil {
		vals := make([]Row, len(rows))
		for i, r := range rows {
			vals[i] = Row{ID: r.id, Order: r.order, Value: r.value}
		}
		l.Arrange(vals)
		for i, r := range rows {
			raw, err := json.Marshal(vals[i].Value)
			if err != nil {
				return nil, fmt.Errorf("encode row %s: %w", r.id, err)
			}
			if !bytes.Equal(raw, r.raw) {
				rows[i] = &rowState{id: r.id, order: r.order, value: vals[i].Value, raw: raw}
			}
		}
	}
	byID := make(map[string]*rowState, len(rows))
	for _, r := range rows {
		byID[r.id] = r
	}
	return &listState{rows: rows, byID: byID, complete: complete}, nil
}

// whole encodes the list as a JSON array.
func (ls *listState) whole() json.RawMessage {
	n := 2
	for _, r := range ls.rows {
		n += len(r.raw) + 1
	}
	b := make([]byte, 0, n)
	b = append(b, '[')
	for i, r := range ls.rows {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, r.raw...)
	}
	return append(b, ']')
}

// Delta is what changed in a list between two published states.
type Delta struct {
	Upsert []RowJSON // rows that changed or appeared, in the new order
	Remove []string  // ids that left
	Order  []string  // every id in the new order; nil when the order did not move
}

// RowJSON is one encoded row.
type RowJSON struct {
	ID  string
	Raw json.RawMessage
}

// Empty reports whether nothing changed.
func (d *Delta) Empty() bool { return len(d.Upsert) == 0 && len(d.Remove) == 0 && d.Order == nil }

// diff is the delta from old to ls. Order is sent when the ids, once the
// removed ones are dropped from old, are not already in the new order
// (an id appeared or moved).
func diff(old, ls *listState) *Delta {
	d := &Delta{}
	for _, r := range ls.rows {
		if o := old.byID[r.id]; o == nil || !bytes.Equal(o.raw, r.raw) {
			d.Upsert = append(d.Upsert, RowJSON{ID: r.id, Raw: r.raw})
		}
	}
	left := map[string]bool{}
	for _, r := range old.rows {
		if ls.byID[r.id] == nil {
			d.Remove = append(d.Remove, r.id)
			left[r.id] = true
		}
	}
	if moved(old.rows, ls.rows, left) {
		d.Order = make([]string, len(ls.rows))
		for i, r := range ls.rows {
			d.Order[i] = r.id
		}
	}
	return d
}

// Body encodes the delta's fields, the part of a delta frame after its id:
// `"upsert":[…],"remove":[…]` and `,"order":[…]` when present, then `}`.
func (d *Delta) Body() []byte {
	n := 32
	for _, r := range d.Upsert {
		n += len(r.Raw) + 1
	}
	b := make([]byte, 0, n)
	b = append(b, `"upsert":[`...)
	for i, r := range d.Upsert {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, r.Raw...)
	}
	b = append(b, `],"remove":`...)
	b = appendIDs(b, d.Remove)
	if d.Order != nil {
		b = append(b, `,"order":`...)
		b = appendIDs(b, d.Order)
	}
	return append(b, '}')
}

func appendIDs(b []byte, ids []string) []byte {
	if len(ids) == 0 {
		return append(b, "[]"...)
	}
	enc, err := json.Marshal(ids)
	if err != nil {
		panic(err) // strings always encode
	}
	return append(b, enc...)
}

// Merge folds next, a delta that followed d, into d: the result takes a
// holder of d's starting point straight to next's end. A row changed in d
// and changed back in next is still upserted (harmless: the holder then
// has it as it is).
func (d *Delta) Merge(next *Delta) {
	removed := make(map[string]bool, len(next.Remove))
	for _, id := range next.Remove {
		removed[id] = true
	}
	again := make(map[string]bool, len(next.Upsert))
	for _, r := range next.Upsert {
		again[r.ID] = true
	}
	upserts := make([]RowJSON, 0, len(d.Upsert)+len(next.Upsert))
	for _, r := range d.Upsert {
		if !removed[r.ID] && !again[r.ID] {
			upserts = append(upserts, r)
		}
	}
	d.Upsert = append(upserts, next.Upsert...)
	remove := make([]string, 0, len(d.Remove)+len(next.Remove))
	for _, id := range d.Remove {
		if !again[id] && !removed[id] {
			remove = append(remove, id)
		}
	}
	d.Remove = append(remove, next.Remove...)
	switch {
	case next.Order != nil:
		d.Order = next.Order
	case d.Order != nil:
		d.Order = slices.DeleteFunc(slices.Clone(d.Order), func(id string) bool { return removed[id] })
	}
}
