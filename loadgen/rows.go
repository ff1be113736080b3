package loadgen

import (
	"bytes"
	"errors"
	"fmt"
)

// Rows is one subscription's result as a client holds it (CONTRACT §3,
// deltas): rows by key, in the query's order. A whole data replaces it; a
// delta replaces or adds the upserted rows, drops the removed ids and, when
// it carries one, takes the new order. Rows are kept as the bytes the server
// sent, so that a row that did not change is recognised by comparing bytes.
type Rows struct {
	key    func(row []byte) string
	byKey  map[string][]byte
	order  []string
	loaded bool // a data arrived
}

// Change is a row that appeared or changed; Old is nil for a new row.
type Change struct {
	Key      string
	Row, Old []byte
}

// Problems Apply reports; the rows are applied as well as they can be.
var (
	errDeltaFirst = errors.New("delta_before_data")
	errOrder      = errors.New("order_mismatch")
	errDuplicate  = errors.New("duplicate_id")
	errNotList    = errors.New("not_a_list")
)

// NewRows holds rows keyed by their _id.
func NewRows() *Rows { return NewRowsBy("_id") }

// NewRowsBy holds rows keyed by the first of keyFields a row has, falling
// back to the row's bytes (a list without ids can still be diffed).
func NewRowsBy(keyFields ...string) *Rows {
	return &Rows{byKey: map[string][]byte{}, key: func(row []byte) string {
		for _, k := range keyFields {
			if v := field(row, k); v != nil && string(v) != "null" {
				if s := str(v); s != "" {
					return s
				}
				return string(v) // a number
			}
		}
		return string(row)
	}}
}

// Len is the number of rows held.
func (r *Rows) Len() int { return len(r.order) }

// List returns the rows in order.
func (r *Rows) List() [][]byte {
	out := make([][]byte, len(r.order))
	for i, k := range r.order {
		out[i] = r.byKey[k]
	}
	return out
}

// Apply applies a data or delta frame and returns the rows that changed.
func (r *Rows) Apply(f frame) ([]Change, error) {
	switch f.Type {
	case "data":
		return r.applyData(f.Value)
	case "delta":
		return r.applyDelta(f.Upsert, f.Remove, f.Order)
	}
	return nil, fmt.Errorf("rows: frame type %q", f.Type)
}

func (r *Rows) applyData(value []byte) ([]Change, error) {
	var (
		changes []Change
		problem error
		byKey   = make(map[string][]byte, len(r.byKey))
		order   = make([]string, 0, len(r.order))
	)
	switch v := bytes.TrimSpace(value); {
	case string(v) == "null":
		problem = errNotList // reported, and held as the empty list it should have been
	case len(v) == 0 || v[0] != '[':
		return nil, errNotList
	}
	err := eachElem(value, func(row []byte) {
		k := r.key(row)
		if _, dup := byKey[k]; dup {
			problem = errDuplicate
		} else {
			order = append(order, k)
		}
		old, had := r.byKey[k]
		if had && bytes.Equal(old, row) {
			byKey[k] = old
			return
		}
		row = bytes.Clone(row)
		byKey[k] = row
		changes = append(changes, Change{Key: k, Row: row, Old: old})
	})
	if err != nil {
		return nil, err
	}
	r.byKey, r.order, r.loaded = byKey, order, true
	return changes, problem
}

func (r *Rows) applyDelta(upsert, remove, order []byte) ([]Change, error) {
	var (
		changes []Change
		problem error
	)
	if !r.loaded {
		problem = errDeltaFirst
	}
	removed := map[string]bool{}
	if err := eachElem(remove, func(v []byte) {
		k := str(v)
		removed[k] = true
		delete(r.byKey, k)
	}); err != nil {
		return nil, err
	}
	if len(removed) > 0 {
		kept := r.order[:0]
		for _, k := range r.order {
			if !removed[k] {
				kept = append(kept, k)
			}
		}
		r.order = kept
	}
	if err := eachElem(upsert, func(row []byte) {
		k := r.key(row)
		old, had := r.byKey[k]
		if had && bytes.Equal(old, row) {
			return
		}
		row = bytes.Clone(row)
		r.byKey[k] = row
		if !had {
			r.order = append(r.order, k) // placed for now; the order field says where
		}
		changes = append(changes, Change{Key: k, Row: row, Old: old})
	}); err != nil {
		return nil, err
	}
	if order != nil && string(bytes.TrimSpace(order)) != "null" {
		var next []string
		if err := eachElem(order, func(v []byte) { next = append(next, str(v)) }); err != nil {
			return nil, err
		}
		r.order = next
	}
	// The order must list every row held, once.
	if len(r.order) != len(r.byKey) {
		problem = errOrder
	} else {
		seen := make(map[string]bool, len(r.order))
		for _, k := range r.order {
			if _, ok := r.byKey[k]; !ok || seen[k] {
				problem = errOrder
				break
			}
			seen[k] = true
		}
	}
	if problem == errOrder {
		r.repairOrder()
	}
	return changes, problem
}

// repairOrder makes the order list every held row once, keeping what it can,
// so that one bad frame is counted once and not on every frame after it.
func (r *Rows) repairOrder() {
	seen := make(map[string]bool, len(r.byKey))
	kept := r.order[:0]
	for _, k := range r.order {
		if _, ok := r.byKey[k]; ok && !seen[k] {
			seen[k] = true
			kept = append(kept, k)
		}
	}
	for k := range r.byKey {
		if !seen[k] {
			kept = append(kept, k)
		}
	}
	r.order = kept
}
