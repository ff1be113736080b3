package loadgen

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestRowsApplyDataAndDeltas(t *testing.T) {
	const (
		a  = `{"_id":"a","student_name":"Ada","answered_count":1}`
		a2 = `{"_id":"a","student_name":"Ada","answered_count":2}`
		b  = `{"_id":"b","student_name":"Ben","answered_count":1}`
		b2 = `{"_id":"b","student_name":"Ben","answered_count":7}`
		c  = `{"_id":"c","student_name":"Chloé","answered_count":0}`
		z  = `{"_id":"z","student_name":"Aaron","answered_count":0}`
	)
	data := func(rows ...string) string {
		return `{"type":"data","id":"q1","value":[` + strings.Join(rows, ",") + `]}`
	}
	type step struct {
		frame       string
		wantChanged []string // keys of the rows reported as changed; nil: not checked
		wantErr     error
	}
	cases := []struct {
		name  string
		steps []step
		want  []string // rows in order after the last step
	}{
		{name: "first data", steps: []step{{frame: data(a, b), wantChanged: []string{"a", "b"}}}, want: []string{a, b}},
		{name: "empty data", steps: []step{{frame: data()}}, want: []string{}},
		{name: "upsert replaces a row in place",
			steps: []step{{frame: data(a, b)}, {frame: `{"type":"delta","id":"q1","upsert":[` + b2 + `],"remove":[]}`, wantChanged: []string{"b"}}},
			want:  []string{a, b2}},
		{name: "an upsert equal to the row held is no change",
			steps: []step{{frame: data(a, b)}, {frame: `{"type":"delta","id":"q1","upsert":[` + b + `]}`, wantChanged: []string{}}},
			want:  []string{a, b}},
		{name: "remove drops the row and keeps the order",
			steps: []step{{frame: data(a, b, c)}, {frame: `{"type":"delta","id":"q1","upsert":[],"remove":["b"]}`, wantChanged: []string{}}},
			want:  []string{a, c}},
		{name: "removing an id not held is harmless",
			steps: []step{{frame: data(a)}, {frame: `{"type":"delta","id":"q1","remove":["nope"]}`}},
			want:  []string{a}},
		{name: "a new row takes its place from order",
			steps: []step{{frame: data(a, b)}, {frame: `{"type":"delta","id":"q1","upsert":[` + z + `],"remove":[],"order":["z","a","b"]}`, wantChanged: []string{"z"}}},
			want:  []string{z, a, b}},
		{name: "order alone reorders",
			steps: []step{{frame: data(a, b, c)}, {frame: `{"type":"delta","id":"q1","upsert":[],"remove":[],"order":["c","b","a"]}`, wantChanged: []string{}}},
			want:  []string{c, b, a}},
		{name: "upsert, remove and order in one delta",
			steps: []step{{frame: data(a, b, c)},
				{frame: `{"type":"delta","id":"q1","upsert":[` + a2 + `,` + z + `],"remove":["b"],"order":["z","c","a"]}`, wantChanged: []string{"a", "z"}}},
			want: []string{z, c, a2}},
		{name: "a whole data replaces what was held",
			steps: []step{{frame: data(a, b, c)}, {frame: `{"type":"delta","id":"q1","upsert":[` + b2 + `]}`},
				{frame: data(c, a2), wantChanged: []string{"a"}}},
			want: []string{c, a2}},
		{name: "data then deltas then data then deltas",
			steps: []step{{frame: data(a)}, {frame: `{"type":"delta","id":"q1","upsert":[` + b + `],"order":["a","b"]}`},
				{frame: data(b2)}, {frame: `{"type":"delta","id":"q1","upsert":[` + c + `],"order":["b","c"]}`, wantChanged: []string{"c"}}},
			want: []string{b2, c}},
		{name: "a new row without order goes last",
			steps: []step{{frame: data(a)}, {frame: `{"type":"delta","id":"q1","upsert":[` + b + `]}`, wantChanged: []string{"b"}}},
			want:  []string{a, b}},
		{name: "order that misses a row is reported and repaired",
			steps: []step{{frame: data(a, b)}, {frame: `{"type":"delta","id":"q1","upsert":[` + c + `],"order":["c","a"]}`, wantChanged: []string{"c"}, wantErr: errOrder}},
			want:  []string{c, a, b}},
		{name: "order naming a row not held is reported and repaired",
			steps: []step{{frame: data(a)}, {frame: `{"type":"delta","id":"q1","order":["x","a"]}`, wantErr: errOrder}},
			want:  []string{a}},
		{name: "delta before data is reported",
			steps: []step{{frame: `{"type":"delta","id":"q1","upsert":[` + a + `]}`, wantChanged: []string{"a"}, wantErr: errDeltaFirst}},
			want:  []string{a}},
		{name: "duplicate ids in data are reported",
			steps: []step{{frame: data(a, a2), wantChanged: []string{"a", "a"}, wantErr: errDuplicate}},
			want:  []string{a2}},
		{name: "data that is not a list",
			steps: []step{{frame: data(a)}, {frame: `{"type":"data","id":"q1","value":{"_id":"a"}}`, wantErr: errNotList}},
			want:  []string{a}},
		{name: "null data is reported and held as empty",
			steps: []step{{frame: data(a)}, {frame: `{"type":"data","id":"q1","value":null}`, wantErr: errNotList},
				{frame: `{"type":"delta","id":"q1","upsert":[` + b + `],"order":["b"]}`, wantChanged: []string{"b"}}},
			want: []string{b}},
		{name: "whitespace and escapes survive byte for byte",
			steps: []step{{frame: "{\"type\": \"data\", \"id\": \"q1\", \"value\": [ {\"_id\": \"q\\\"1\", \"name\": \"a]}\"} ]}", wantChanged: []string{`q"1`}},
				{frame: `{"type":"delta","id":"q1","remove":["q\"1"]}`}},
			want: []string{}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rows := NewRows()
			for i, s := range tc.steps {
				f, err := parseFrame([]byte(s.frame))
				if err != nil {
					t.Fatalf("step %d: parse: %v", i, err)
				}
				changes, err := rows.Apply(f)
				if err != s.wantErr {
					t.Errorf("step %d: error %v, want %v", i, err, s.wantErr)
				}
				keys := []string{}
				for _, c := range changes {
					keys = append(keys, c.Key)
				}
				if s.wantChanged == nil {
					continue
				}
				if diff := cmp.Diff(s.wantChanged, keys); diff != "" {
					t.Errorf("step %d: changed rows (-want +got):\n%s", i, diff)
				}
			}
			got := []string{}
			for _, r := range rows.List() {
				got = append(got, string(r))
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("rows (-want +got):\n%s", diff)
			}
		})
	}
}

func TestRowsChangeCarriesTheOldRow(t *testing.T) {
	rows := NewRows()
	apply := func(s string) []Change {
		f, err := parseFrame([]byte(s))
		if err != nil {
			t.Fatal(err)
		}
		ch, err := rows.Apply(f)
		if err != nil {
			t.Fatal(err)
		}
		return ch
	}
	apply(`{"type":"data","id":"s","value":[{"_id":"a","answered_count":1}]}`)
	ch := apply(`{"type":"delta","id":"s","upsert":[{"_id":"a","answered_count":2}],"remove":[]}`)
	if len(ch) != 1 || num(field(ch[0].Old, "answered_count")) != 1 || num(field(ch[0].Row, "answered_count")) != 2 {
		t.Fatalf("change: %+v", ch)
	}
}

func TestRowsKeyedByAnotherField(t *testing.T) {
	rows := NewRowsBy("_id", "nickname")
	f, _ := parseFrame([]byte(`{"type":"data","id":"lb","value":[{"rank":1,"nickname":"x"},{"_id":"7","nickname":"y"},{"rank":3}]}`))
	ch, err := rows.Apply(f)
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, c := range ch {
		keys = append(keys, c.Key)
	}
	if diff := cmp.Diff([]string{"x", "7", `{"rank":3}`}, keys); diff != "" {
		t.Errorf("keys (-want +got):\n%s", diff)
	}
}

// The walker must agree with encoding/json on what the server sends.
func TestParseFrameAgreesWithEncodingJSON(t *testing.T) {
	frames := []string{
		`{"type":"authed","user":{"id":"u1","role":"tutor","name":"Zoë \"Z\" 🎓"}}`,
		`{"type":"result","id":"c7","value":{"server_time":"2026-03-02T09:00:00Z"}}`,
		`{"type":"result","id":"c8","value":null}`,
		`{"type":"error","id":"c7","code":"rate_limited","message":"too soon \\ wait","retry_after_ms":3100}`,
		`{"type":"error","code":"unauthenticated","message":"token expired"}`,
		`{"type":"data","id":"q1","value":[{"_id":"s1","n":-1.5e3,"ok":true,"x":null,"nested":{"a":[1,[2,{"b":"]}"}]]}}]}`,
		` { "type" : "delta" , "id" : "q1" , "upsert" : [ ] , "remove" : [ "a" , "b\u0022" ] , "order" : null } `,
		`{"id":"q\u0031","type":"data","value":[]}`,
	}
	for _, s := range frames {
		f, err := parseFrame([]byte(s))
		if err != nil {
			t.Errorf("%s: %v", s, err)
			continue
		}
		var want struct {
			Type, ID, Code       string
			RetryAfterMs         int64 `json:"retry_after_ms"`
			Value, Upsert, Order json.RawMessage
			Remove               []string
		}
		if err := json.Unmarshal([]byte(s), &want); err != nil {
			t.Fatal(err)
		}
		if f.Type != want.Type || f.ID != want.ID || f.Code != want.Code || f.RetryAfterMs != want.RetryAfterMs {
			t.Errorf("%s: got type %q id %q code %q, want %q %q %q", s, f.Type, f.ID, f.Code, want.Type, want.ID, want.Code)
		}
		if string(f.Value) != strings.TrimSpace(string(want.Value)) || string(f.Upsert) != strings.TrimSpace(string(want.Upsert)) {
			t.Errorf("%s: value %q upsert %q", s, f.Value, f.Upsert)
		}
		var removed []string
		if err := eachElem(f.Remove, func(v []byte) { removed = append(removed, str(v)) }); f.Remove != nil && err != nil {
			t.Errorf("%s: remove: %v", s, err)
		}
		if diff := cmp.Diff(want.Remove, removed); diff != "" {
			t.Errorf("%s: remove (-json +walker):\n%s", s, diff)
		}
	}
	for _, bad := range []string{``, `[]`, `{"type":"data"`, `{"type":"data","value":[1,2}`, `{"type":}`, `{"type":"x" "id":"y"}`, `{"value":[]}`, `{"type":"a\`} {
		if _, err := parseFrame([]byte(bad)); err == nil {
			t.Errorf("%q: want an error", bad)
		}
	}
}
