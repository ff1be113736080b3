package api_test

// A reader for the declarations between the "wire types" markers of
// static/invigil.d.ts: `export type X = T;` and
// `export interface X [extends Y, …] { name[?]: T; … }`, where T is built
// from string, number, boolean, null, unknown, string literals, declared
// names, T[], Array<T>, Record<string, T>, { … } and unions. Anything else
// is an error: the checker must understand every type it vouches for.

import (
	"fmt"
	"strings"
)

// tsKind is the kind of a TypeScript type expression.
type tsKind int

const (
	tsPrim   tsKind = iota // string, number, boolean, null, unknown
	tsLit                  // 'text'
	tsRef                  // a declared name
	tsArray                // T[]
	tsRecord               // Record<string, T>
	tsObject               // { … } or an interface
	tsUnion                // A | B
)

type tsType struct {
	kind    tsKind
	name    string    // tsPrim: the primitive; tsLit: the text; tsRef: the name
	elem    *tsType   // tsArray, tsRecord
	members []*tsType // tsUnion
	fields  []tsField // tsObject
	extends []string  // tsObject (interfaces)
}

type tsField struct {
	name     string
	optional bool
	typ      *tsType
}

func (t *tsType) String() string {
	switch t.kind {
	case tsPrim, tsRef:
		return t.name
	case tsLit:
		return "'" + t.name + "'"
	case tsArray:
		return t.elem.String() + "[]"
	case tsRecord:
		return "Record<string, " + t.elem.String() + ">"
	case tsUnion:
		parts := make([]string, len(t.members))
		for i, m := range t.members {
			parts[i] = m.String()
		}
		return strings.Join(parts, " | ")
	default:
		parts := make([]string, len(t.fields))
		for i, f := range t.fields {
			q := ""
			if f.optional {
				q = "?"
			}
			parts[i] = f.name + q + ": " + f.typ.String()
		}
		return "{ " + strings.Join(parts, "; ") + " }"
	}
}

// tsDecls are the declarations read, by name, in the order they came.
type tsDecls struct {
	byName map[string]*tsType
	order  []string
}

const (
	wireStart = "// --- wire types"
	wireEnd   = "// --- end wire types ---"
)

// parseWireTypes reads the declarations between the markers of src.
func parseWireTypes(src string) (*tsDecls, error) {
	i := strings.Index(src, wireStart)
	j := strings.Index(src, wireEnd)
	if i < 0 || j < i {
		return nil, fmt.Errorf("no %q … %q section", wireStart, wireEnd)
	}
	start := i + strings.Index(src[i:], "\n")
	p := &tsParser{toks: tokenize(src[start:j])}
	d := &tsDecls{byName: map[string]*tsType{}}
	for !p.done() {
		name, t, err := p.decl()
		if err != nil {
			return nil, err
		}
		if _, dup := d.byName[name]; dup {
			return nil, fmt.Errorf("%s is declared twice", name)
		}
		d.byName[name] = t
		d.order = append(d.order, name)
	}
	return d, nil
}

type tsToken struct {
	text string
	str  bool // a string literal (text without quotes)
}

func tokenize(src string) []tsToken {
	var out []tsToken
	isIdent := func(c byte, first bool) bool {
		return c == '_' || c == '$' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || !first && '0' <= c && c <= '9'
	}
	for i := 0; i < len(src); {
		c := src[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			i++
		case strings.HasPrefix(src[i:], "//"):
			if n := strings.IndexByte(src[i:], '\n'); n >= 0 {
				i += n
			} else {
				i = len(src)
			}
		case strings.HasPrefix(src[i:], "/*"):
			n := strings.Index(src[i+2:], "*/")
			if n < 0 {
				return append(out, tsToken{text: "/* unterminated"})
			}
			i += 2 + n + 2
		case c == '\'' || c == '"':
			n := strings.IndexByte(src[i+1:], c)
			if n < 0 {
				return append(out, tsToken{text: "unterminated string"})
			}
			out = append(out, tsToken{text: src[i+1 : i+1+n], str: true})
			i += n + 2
		case isIdent(c, true):
			j := i
			for j < len(src) && isIdent(src[j], false) {
				j++
			}
			out = append(out, tsToken{text: src[i:j]})
			i = j
		default:
			out = append(out, tsToken{text: string(c)})
			i++
		}
	}
	return out
}

type tsParser struct {
	toks []tsToken
	pos  int
}

func (p *tsParser) done() bool { return p.pos >= len(p.toks) }

func (p *tsParser) peek() tsToken {
	if p.done() {
		return tsToken{text: "<end>"}
	}
	return p.toks[p.pos]
}

// is reports whether the next token is the punctuation or keyword s.
func (p *tsParser) is(s string) bool { t := p.peek(); return !t.str && t.text == s }

func (p *tsParser) accept(s string) bool {
	if p.is(s) {
		p.pos++
		return true
	}
	return false
}

func (p *tsParser) expect(s string) error {
	if !p.accept(s) {
		return fmt.Errorf("expected %q, found %q (token %d)", s, p.peek().text, p.pos)
	}
	return nil
}

func (p *tsParser) ident() (string, error) {
	t := p.peek()
	if t.str || t.text == "" || !identStart(t.text[0]) {
		return "", fmt.Errorf("expected a name, found %q (token %d)", t.text, p.pos)
	}
	p.pos++
	return t.text, nil
}

func identStart(c byte) bool {
	return c == '_' || c == '$' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z'
}

func (p *tsParser) decl() (string, *tsType, error) {
	if err := p.expect("export"); err != nil {
		return "", nil, err
	}
	switch {
	case p.accept("type"):
		name, err := p.ident()
		if err != nil {
			return "", nil, err
		}
		if err := p.expect("="); err != nil {
			return "", nil, err
		}
		t, err := p.typ()
		if err != nil {
			return "", nil, fmt.Errorf("type %s: %w", name, err)
		}
		return name, t, p.expect(";")
	case p.accept("interface"):
		name, err := p.ident()
		if err != nil {
			return "", nil, err
		}
		var ext []string
		if p.accept("extends") {
			for {
				e, err := p.ident()
				if err != nil {
					return "", nil, err
				}
				ext = append(ext, e)
				if !p.accept(",") {
					break
				}
			}
		}
		t, err := p.object()
		if err != nil {
			return "", nil, fmt.Errorf("interface %s: %w", name, err)
		}
		t.extends = ext
		return name, t, nil
	}
	return "", nil, fmt.Errorf("expected type or interface after export, found %q", p.peek().text)
}

func (p *tsParser) object() (*tsType, error) {
	if err := p.expect("{"); err != nil {
		return nil, err
	}
	t := &tsType{kind: tsObject}
	seen := map[string]bool{}
	for !p.accept("}") {
		if p.done() {
			return nil, fmt.Errorf("unterminated {")
		}
		var name string
		if tok := p.peek(); tok.str {
			name = tok.text
			p.pos++
		} else {
			var err error
			if name, err = p.ident(); err != nil {
				return nil, err
			}
		}
		if seen[name] {
			return nil, fmt.Errorf("field %s twice", name)
		}
		seen[name] = true
		opt := p.accept("?")
		if err := p.expect(":"); err != nil {
			return nil, fmt.Errorf("field %s: %w", name, err)
		}
		ft, err := p.typ()
		if err != nil {
			return nil, fmt.Errorf("field %s: %w", name, err)
		}
		t.fields = append(t.fields, tsField{name: name, optional: opt, typ: ft})
		if !p.accept(";") && !p.accept(",") && !p.is("}") {
			return nil, fmt.Errorf("field %s: expected ; or }, found %q", name, p.peek().text)
		}
	}
	return t, nil
}

func (p *tsParser) typ() (*tsType, error) {
	p.accept("|") // a leading | before the first member
	var ms []*tsType
	for {
		m, err := p.term()
		if err != nil {
			return nil, err
		}
		ms = append(ms, m)
		if !p.accept("|") {
			break
		}
	}
	if len(ms) == 1 {
		return ms[0], nil
	}
	return &tsType{kind: tsUnion, members: ms}, nil
}

func (p *tsParser) term() (*tsType, error) {
	t, err := p.primary()
	if err != nil {
		return nil, err
	}
	for p.is("[") {
		p.pos++
		if err := p.expect("]"); err != nil {
			return nil, err
		}
		t = &tsType{kind: tsArray, elem: t}
	}
	return t, nil
}

func (p *tsParser) primary() (*tsType, error) {
	if tok := p.peek(); tok.str {
		p.pos++
		return &tsType{kind: tsLit, name: tok.text}, nil
	}
	switch {
	case p.is("{"):
		return p.object()
	case p.accept("("):
		t, err := p.typ()
		if err != nil {
			return nil, err
		}
		return t, p.expect(")")
	}
	name, err := p.ident()
	if err != nil {
		return nil, err
	}
	switch name {
	case "string", "number", "boolean", "null", "unknown":
		return &tsType{kind: tsPrim, name: name}, nil
	case "Array":
		if err := p.expect("<"); err != nil {
			return nil, err
		}
		e, err := p.typ()
		if err != nil {
			return nil, err
		}
		return &tsType{kind: tsArray, elem: e}, p.expect(">")
	case "Record":
		if err := p.expect("<"); err != nil {
			return nil, err
		}
		if err := p.expect("string"); err != nil {
			return nil, err
		}
		if err := p.expect(","); err != nil {
			return nil, err
		}
		e, err := p.typ()
		if err != nil {
			return nil, err
		}
		return &tsType{kind: tsRecord, elem: e}, p.expect(">")
	case "any", "undefined", "object", "never", "void":
		return nil, fmt.Errorf("%s is not a wire type (use unknown, null or a declared shape)", name)
	}
	if p.is("<") {
		return nil, fmt.Errorf("generic %s<…> is not a wire type", name)
	}
	return &tsType{kind: tsRef, name: name}, nil
}
