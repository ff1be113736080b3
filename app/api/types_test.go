package api_test

// The type-drift test: static/invigil.d.ts against app/api's table. Every
// contract name must be in the TypeScript maps Functions and Queries and
// nowhere else; each one's args and result must have, field by field, the
// same JSON names, optionality, nullability and JSON types as the Go types
// the table names. The TypeScript side is read by tsparse_test.go.

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"

	"invigil/app/api"
)

// dtsPath is the file checked, from this package's directory.
var dtsPath = filepath.Join("..", "..", "static", "invigil.d.ts")

func TestTypeScriptMatchesGo(t *testing.T) {
	src, err := os.ReadFile(dtsPath)
	if err != nil {
		t.Fatal(err)
	}
	decls, err := parseWireTypes(string(src))
	if err != nil {
		t.Fatalf("%s: %v", dtsPath, err)
	}
	for _, e := range checkContract(decls) {
		t.Error(e)
	}
}

// checkContract compares decls with api.Contract, api.Raw and api.Enums and
// returns what disagrees.
func checkContract(decls *tsDecls) []string {
	c := &checker{decls: decls, used: map[string]bool{}}
	for _, m := range []struct {
		iface  string
		kind   api.Kind
		result string // the member holding the result
	}{{"Functions", api.Function, "result"}, {"Queries", api.Query, "value"}} {
		c.used[m.iface] = true
		obj, ok := decls.byName[m.iface]
		if !ok || obj.kind != tsObject {
			c.errorf("%s: no interface %s", m.kind, m.iface)
			continue
		}
		ts := map[string]tsField{}
		for _, f := range obj.fields {
			ts[f.name] = f
		}
		for _, e := range api.Contract {
			if e.Kind != m.kind {
				continue
			}
			f, ok := ts[e.Name]
			delete(ts, e.Name)
			if !ok {
				c.errorf("%s %s: missing from %s", e.Kind, e.Name, m.iface)
				continue
			}
			members := c.fields(f.typ, e.Name)
			args, okA := members["args"]
			res, okR := members[m.result]
			if !okA || !okR || len(members) != 2 {
				c.errorf("%s.%s: want { args: …; %s: … }, found %s", m.iface, e.Name, m.result, f.typ)
				continue
			}
			c.compare(e.Name+" args", e.Args, args.typ, true)
			c.compare(e.Name+" "+m.result, e.Result, res.typ, false)
		}
		for name := range ts {
			c.errorf("%s.%s: not in api.Contract (a %s the server does not serve?)", m.iface, name, m.kind)
		}
	}
	for name, values := range api.Enums {
		c.used[name] = true
		lits, ok := c.literals(decls.byName[name])
		if !ok {
			c.errorf("enum %s: want `export type %s = 'a' | 'b' …;` in the wire types", name, name)
			continue
		}
		want := slices.Sorted(slices.Values(values))
		if !slices.Equal(lits, want) {
			c.errorf("enum %s: TypeScript has %v, Go has %v", name, lits, want)
		}
	}
	for _, name := range decls.order {
		if !c.used[name] {
			c.errorf("%s is declared in the wire types but no contract name uses it (move it out, or add its name to api.Contract)", name)
		}
	}
	sort.Strings(c.errs)
	return c.errs
}

type checker struct {
	decls *tsDecls
	used  map[string]bool // declarations reached
	errs  []string
}

func (c *checker) errorf(format string, a ...any) { c.errs = append(c.errs, fmt.Sprintf(format, a...)) }

// resolve follows declared names to the type they stand for.
func (c *checker) resolve(t *tsType) *tsType {
	for i := 0; t != nil && t.kind == tsRef && i < 32; i++ {
		c.used[t.name] = true
		d, ok := c.decls.byName[t.name]
		if !ok {
			c.errorf("%s is not declared in the wire types", t.name)
			return nil
		}
		t = d
	}
	return t
}

// flat is t's union members with names resolved and nested unions
// flattened, and whether null is among them (left out of the members).
func (c *checker) flat(t *tsType) (members []*tsType, null bool) {
	t = c.resolve(t)
	switch {
	case t == nil:
		return nil, false
	case t.kind == tsUnion:
		for _, m := range t.members {
			ms, n := c.flat(m)
			members = append(members, ms...)
			null = null || n
		}
		return members, null
	case t.kind == tsPrim && t.name == "null":
		return nil, true
	}
	return []*tsType{t}, false
}

// fields are an object type's fields, those of the interfaces it extends
// included.
func (c *checker) fields(t *tsType, where string) map[string]tsField {
	out := map[string]tsField{}
	t = c.resolve(t)
	if t == nil || t.kind != tsObject {
		c.errorf("%s: want an object type, found %v", where, t)
		return out
	}
	for _, e := range t.extends {
		for k, f := range c.fields(&tsType{kind: tsRef, name: e}, where+" (extends "+e+")") {
			out[k] = f
		}
	}
	for _, f := range t.fields {
		out[f.name] = f
	}
	return out
}

// literals is the sorted values of a union of string literals.
func (c *checker) literals(t *tsType) ([]string, bool) {
	if t == nil {
		return nil, false
	}
	ms, null := c.flat(t)
	if null || len(ms) == 0 {
		return nil, false
	}
	var out []string
	for _, m := range ms {
		if m.kind != tsLit {
			return nil, false
		}
		out = append(out, m.name)
	}
	sort.Strings(out)
	return out, true
}

var rawMessage = reflect.TypeFor[json.RawMessage]()

// compare checks the TypeScript type ts against the Go type g at path; in
// is true for arguments (what clients send), false for results.
func (c *checker) compare(path string, g reflect.Type, ts *tsType, in bool) {
	if g == rawMessage {
		c.errorf("%s: a json.RawMessage outside a struct field has no entry in api.Raw", path)
		return
	}
	ms, null := c.flat(ts)
	if len(ms) == 0 && !null {
		return // an unresolved name, reported
	}
	if g.Kind() == reflect.Pointer {
		g = g.Elem()
		switch {
		case in && null:
			c.errorf("%s: arguments are never null: drop `| null` (optional is `?`)", path)
		case !in && !null:
			c.errorf("%s: Go's %s may be null: TypeScript needs `| null`", path, g)
		}
	} else if null {
		c.errorf("%s: TypeScript allows null, Go's %s is never null", path, g)
	}
	if len(ms) == 0 {
		c.errorf("%s: TypeScript says only null, Go has %s", path, g)
		return
	}
	want := func(what string) {
		c.errorf("%s: Go's %s is a JSON %s, TypeScript has %s", path, g, what, ts)
	}
	one := func() *tsType {
		if len(ms) != 1 {
			return nil
		}
		return ms[0]
	}
	if g.Kind() == reflect.Interface {
		if m := one(); m == nil || m.kind != tsPrim || m.name != "unknown" {
			want("value of any type (unknown)")
		}
		return
	}
	switch g.Kind() {
	case reflect.String:
		// string, or a union of literals named in api.Enums.
		if m := one(); m != nil && m.kind == tsPrim && m.name == "string" {
			return
		}
		if !c.checkedEnum(ts) {
			want("string (string, or a literal union named in api.Enums)")
		}
	case reflect.Bool:
		if m := one(); m == nil || m.kind != tsPrim || m.name != "boolean" {
			want("boolean")
		}
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64,
		reflect.Float32, reflect.Float64:
		if m := one(); m == nil || m.kind != tsPrim || m.name != "number" {
			want("number")
		}
	case reflect.Slice, reflect.Array:
		if m := one(); m == nil || m.kind != tsArray {
			want("array")
			return
		}
		c.compare(path+"[]", g.Elem(), ms[0].elem, in)
	case reflect.Map:
		if g.Key().Kind() != reflect.String {
			c.errorf("%s: Go map %s has no JSON object form this check knows", path, g)
			return
		}
		if m := one(); m == nil || m.kind != tsRecord {
			want("object of string keys (Record<string, …>)")
			return
		}
		c.compare(path+"{}", g.Elem(), ms[0].elem, in)
	case reflect.Struct:
		if m := one(); m == nil || m.kind != tsObject {
			want("object")
			return
		}
		c.compareStruct(path, g, ms[0], in)
	default:
		c.errorf("%s: Go's %s has no JSON form this check knows", path, g)
	}
}

// checkedEnum reports whether ts is a declared union of literals that
// api.Enums lists (and so is checked value by value).
func (c *checker) checkedEnum(ts *tsType) bool {
	if ts.kind == tsUnion {
		var rest []*tsType
		for _, m := range ts.members {
			if m.kind != tsPrim || m.name != "null" {
				rest = append(rest, m)
			}
		}
		if len(rest) != 1 {
			return false
		}
		ts = rest[0]
	}
	for ts != nil && ts.kind == tsRef {
		if _, ok := api.Enums[ts.name]; ok {
			c.used[ts.name] = true
			return true
		}
		ts = c.resolve(ts)
	}
	return false
}

func (c *checker) compareStruct(path string, g reflect.Type, obj *tsType, in bool) {
	ts := c.fields(obj, path)
	for _, f := range jsonFields(g) {
		fp := path + "." + f.name
		tf, ok := ts[f.name]
		delete(ts, f.name)
		if !ok {
			c.errorf("%s: Go field %s (%s) is missing in TypeScript", fp, f.goName, f.typ)
			continue
		}
		if tf.optional != f.omitempty {
			switch {
			case in && f.omitempty:
				c.errorf("%s: optional in Go (omitempty): TypeScript needs `?`", fp)
			case in:
				c.errorf("%s: required in Go (no omitempty): TypeScript must not say `?`", fp)
			case f.omitempty:
				c.errorf("%s: Go omits it when empty (omitempty): TypeScript needs `?`", fp)
			default:
				c.errorf("%s: Go always sends it: TypeScript must not say `?`", fp)
			}
		}
		typ := f.typ
		if typ == rawMessage {
			carried, ok := api.Raw[g.Name()+"."+f.name]
			if !ok {
				if ms, _ := c.flat(tf.typ); len(ms) != 1 || ms[0].kind != tsPrim || ms[0].name != "unknown" {
					c.errorf("%s: a json.RawMessage is unknown to TypeScript unless api.Raw[%q] names its Go type", fp, g.Name()+"."+f.name)
				}
				continue
			}
			typ = carried
		}
		if f.omitempty && typ.Kind() == reflect.Pointer {
			// Absent when nil, so never null on the wire.
			typ = typ.Elem()
		}
		c.compare(fp, typ, tf.typ, in)
	}
	for name := range ts {
		c.errorf("%s.%s: in TypeScript, not in Go's %s", path, name, g)
	}
}

type jsonField struct {
	name, goName string
	typ          reflect.Type
	omitempty    bool
}

// jsonFields are the fields encoding/json reads and writes for struct g,
// embedded structs' fields included (as encoding/json flattens them).
func jsonFields(g reflect.Type) []jsonField {
	var out []jsonField
	for i := range g.NumField() {
		f := g.Field(i)
		tag := f.Tag.Get("json")
		if tag == "-" {
			continue
		}
		name, opts, _ := strings.Cut(tag, ",")
		if f.Anonymous && name == "" {
			t := f.Type
			if t.Kind() == reflect.Pointer {
				t = t.Elem()
			}
			if t.Kind() == reflect.Struct {
				out = append(out, jsonFields(t)...)
				continue
			}
		}
		if !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		omit := slices.Contains(strings.Split(opts, ","), "omitempty") || slices.Contains(strings.Split(opts, ","), "omitzero")
		out = append(out, jsonField{name: name, goName: f.Name, typ: f.Type, omitempty: omit})
	}
	return out
}

// The check itself: each edit of the real file is a drift it must report.
func TestTypeDriftIsCaught(t *testing.T) {
	src, err := os.ReadFile(dtsPath)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, old, new string
		want           string // a piece of the error
	}{
		{"field renamed", "  student_name: string;\n  status: SessionStatus;", "  studentName: string;\n  status: SessionStatus;", "student_name: Go field StudentName"},
		{"field missing", "  answered_count: number;\n  violation_count: number;", "  violation_count: number;", "answered_count: Go field AnsweredCount"},
		{"nullable lost", "  ended_at: string | null;", "  ended_at: string;", "needs `| null`"},
		{"null added", "  last_heartbeat: string;", "  last_heartbeat: string | null;", "TypeScript allows null"},
		{"optional added to a result", "  players: number;", "  players?: number;", "must not say `?`"},
		{"required argument made optional", "  student_id: string;\n}\n\nexport interface ViolationsArgs", "  student_id?: string;\n}\n\nexport interface ViolationsArgs", "required in Go"},
		{"optional argument made required", "  client_id?: string;", "  client_id: string;", "TypeScript needs `?`"},
		{"number for a string", "  server_time: string;", "  server_time: number;", "is a JSON string"},
		{"string for a number", "  rank: number;", "  rank: string;", "is a JSON number"},
		{"array lost", "  violations: Violation[];", "  violations: Violation;", "is a JSON array"},
		{"raw field's carried type", "  network: HeartbeatNetwork | null;", "  network: unknown;", "getSession value.network: Go's proctoring.Network is a JSON object"},
		{"extra field", "  title: string;\n  players: number;", "  title: string;\n  players: number;\n  host: string;", "getQuiz value.host: in TypeScript, not in Go"},
		{"enum value missing", "  | 'other';", ";", "enum ViolationType"},
		{"literal union not in api.Enums", "  effective_type?: string;", "  effective_type?: '4g' | '3g';", "literal union named in api.Enums"},
		{"function missing", "  'proctoring.heartbeat': { args: HeartbeatArgs; result: HeartbeatResult };\n", "", "proctoring.heartbeat: missing from Functions"},
		{"function the server lacks", "export interface Functions {\n", "export interface Functions {\n  'proctoring.pause': { args: ExamArgs; result: HeartbeatResult };\n", "Functions.proctoring.pause: not in api.Contract"},
		{"wrong argument type", "'proctoring.getSession': { args: SessionArgs;", "'proctoring.getSession': { args: ExamArgs;", "student_id: Go field StudentID"},
		{"query value not a list", "value: ProctoringSession[] }", "value: ProctoringSession }", "is a JSON array"},
		{"unchecked declaration", "export interface Quiz {", "export interface Unused { a: string }\n\nexport interface Quiz {", "Unused is declared"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if !strings.Contains(string(src), tt.old) {
				t.Fatalf("the test's text %q is no longer in %s: update the test", tt.old, dtsPath)
			}
			decls, err := parseWireTypes(strings.Replace(string(src), tt.old, tt.new, 1))
			if err != nil {
				t.Fatal(err)
			}
			errs := checkContract(decls)
			if len(errs) == 0 {
				t.Fatalf("drift not reported")
			}
			if !slices.ContainsFunc(errs, func(e string) bool { return strings.Contains(e, tt.want) }) {
				t.Fatalf("no error mentions %q:\n  %s", tt.want, strings.Join(errs, "\n  "))
			}
		})
	}
}
