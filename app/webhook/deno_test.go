package webhook

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	gocmp "github.com/google/go-cmp/cmp"
	"github.com/jonboulle/clockwork"
)

// signTS calls signWebhook from the very file Supabase edge functions
// import, supabase/functions/_shared/invigil.ts, and prints its headers.
const signTS = `import { signWebhook } from %q;
const [secret, id, body, ms] = Deno.args;
console.log(JSON.stringify(await signWebhook(secret, id, body, new Date(Number(ms)))));
`

// TestEdgeFunctionSignerInterop proves that what an edge function signs is
// what Sign produces and Verify accepts. It runs under Deno ($DENO, or deno
// on PATH; .ci/run installs it from the npm registry).
func TestEdgeFunctionSignerInterop(t *testing.T) {
	deno, err := exec.LookPath(cmp.Or(os.Getenv("DENO"), "deno"))
	if err != nil {
		if os.Getenv("INVIGIL_REQUIRE_PG_DENO") != "" {
			t.Fatalf("!!! Deno is required (INVIGIL_REQUIRE_PG_DENO) and not found: %v", err)
		}
		t.Skipf("!!! SKIPPED: Deno not found, so invigil.ts's signer is NOT tested against Verify: %v", err)
	}
	src, err := filepath.Abs("../../supabase/functions/_shared/invigil.ts")
	if err != nil {
		t.Fatal(err)
	}
	script := filepath.Join(t.TempDir(), "sign.ts")
	module := (&url.URL{Scheme: "file", Path: filepath.ToSlash(src)}).String()
	if err := os.WriteFile(script, []byte(fmt.Sprintf(signTS, module)), 0o600); err != nil {
		t.Fatal(err)
	}
	const id = "score_7f1c"
	body := `{"nickname":"Zoë 🎓","score":9,"max_score":10}` // non-ASCII: UTF-8 on both sides
	ts := epoch.Add(1500 * time.Millisecond)

	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, deno, "run", "--no-config", "--no-prompt", script,
		"v1,"+testSecret, id, body, strconv.FormatInt(ts.UnixMilli(), 10))
	cmd.Env = append(os.Environ(), "DENO_NO_UPDATE_CHECK=1", "NO_COLOR=1")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("deno: %v", err)
	}
	var fromDeno map[string]string
	if err := json.Unmarshal(out, &fromDeno); err != nil {
		t.Fatalf("deno output %q: %v", out, err)
	}
	h := http.Header{}
	for k, v := range fromDeno {
		h.Set(k, v)
	}

	if diff := gocmp.Diff(mustSign(t, testSecret, id, ts, []byte(body)), h); diff != "" {
		t.Errorf("invigil.ts headers differ from Sign (-go +deno):\n%s", diff)
	}
	v := mustVerifier(t, testSecret, clockwork.NewFakeClockAt(epoch))
	if got, err := v.Verify(h, []byte(body)); err != nil || got != id {
		t.Errorf("Verify(invigil.ts headers) = %q, %v", got, err)
	}
}
