package webhook

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/jonboulle/clockwork"
)

// signMJS is signWebhook from supabase/functions/_shared/invigil.ts with the
// types taken out: the same WebCrypto calls, run by node to prove that what
// an edge function signs is what Verify accepts. Keep the two in step.
const signMJS = `
async function signWebhook(secret, id, body, now = new Date()) {
  const b64 = secret.trim().replace(/^v1,/, "");
  if (!b64.startsWith("whsec_")) throw new Error("invigil: secret must look like whsec_<base64>");
  const raw = Uint8Array.from(atob(b64.slice("whsec_".length)), (c) => c.charCodeAt(0));
  const key = await crypto.subtle.importKey("raw", raw, { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
  const ts = Math.floor(now.getTime() / 1000).toString();
  const mac = new Uint8Array(await crypto.subtle.sign("HMAC", key, new TextEncoder().encode(` + "`${id}.${ts}.${body}`" + `)));
  return {
    "webhook-id": id,
    "webhook-timestamp": ts,
    "webhook-signature": ` + "`v1,${btoa(String.fromCharCode(...mac))}`" + `,
  };
}
const [secret, id, body, ms] = process.argv.slice(2);
console.log(JSON.stringify(await signWebhook(secret, id, body, new Date(Number(ms)))));
`

func TestWebCryptoSignerInterop(t *testing.T) {
	node, err := exec.LookPath("node")
	if err != nil {
		t.Skip("node not installed")
	}
	script := filepath.Join(t.TempDir(), "sign.mjs")
	if err := os.WriteFile(script, []byte(signMJS), 0o600); err != nil {
		t.Fatal(err)
	}
	const id = "score_7f1c"
	body := `{"nickname":"Zoë 🎓","score":9,"max_score":10}` // non-ASCII: UTF-8 on both sides
	ts := epoch.Add(1500 * time.Millisecond)

	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, node, script, "v1,"+testSecret, id, body,
		strconv.FormatInt(ts.UnixMilli(), 10)).Output()
	if err != nil {
		t.Fatalf("node: %v", err)
	}
	var fromNode map[string]string
	if err := json.Unmarshal(out, &fromNode); err != nil {
		t.Fatalf("node output %q: %v", out, err)
	}
	h := http.Header{}
	for k, v := range fromNode {
		h.Set(k, v)
	}

	if diff := cmp.Diff(mustSign(t, testSecret, id, ts, []byte(body)), h); diff != "" {
		t.Errorf("node headers differ from Sign (-go +node):\n%s", diff)
	}
	v := mustVerifier(t, testSecret, clockwork.NewFakeClockAt(epoch))
	if got, err := v.Verify(h, []byte(body)); err != nil || got != id {
		t.Errorf("Verify(node headers) = %q, %v", got, err)
	}
}
