// invigil.ts: push exams and scores from Supabase edge functions to invigil.
//
// Messages are signed with the Standard Webhooks scheme
// (https://www.standardwebhooks.com), which invigil checks on /hooks/*
// (CONTRACT.md section 5):
//   webhook-id, webhook-timestamp (unix seconds),
//   webhook-signature: v1,<base64 HMAC-SHA256(key, `${id}.${timestamp}.${body}`)>
// where key is the base64 after "whsec_" in the secret (INVIGIL_WEBHOOK_SECRET).
// invigil answers a webhook-id it has already seen with 200 and changes
// nothing, so a retry with the same id is safe. WebCrypto only, no imports.
//
//   import { pushScore } from "../_shared/invigil.ts";
//   await pushScore(Deno.env.get("INVIGIL_URL")!, Deno.env.get("INVIGIL_WEBHOOK_SECRET")!, row);
//
// supabase/README.md has the lines for grade-exam; supabase/*_test.go runs
// this file under Deno against invigil's verifier.

export interface Score {
  submission_id: string;
  exam_id: string;
  quiz_code: string;
  nickname: string;
  score: number;
  max_score: number;
  submitted_at: string; // RFC 3339
}

export interface Exam {
  exam_id: string;
  title: string;
  tutor_ids: string[];
  quiz_code?: string;
  status: "scheduled" | "open" | "closed";
  starts_at?: string;
  ends_at?: string;
  student_ids?: string[]; // absent: any student may join while open
  updated_at?: string; // the row's time in Supabase: an older delivery changes nothing
}

const MAX_TRIES = 5;
const TRY_TIMEOUT_MS = 10_000; // one try that hangs counts as a network error
const MAX_RETRY_AFTER_MS = 30_000; // the longest Retry-After honoured

/** Returns the Standard Webhooks headers for body, sent as message id at now. */
export async function signWebhook(
  secret: string,
  id: string,
  body: string,
  now = new Date(),
): Promise<Record<string, string>> {
  // Supabase's dashboard shows hook secrets as "v1,whsec_…"; accept both.
  const b64 = secret.trim().replace(/^v1,/, "");
  if (!b64.startsWith("whsec_")) throw new Error("invigil: secret must look like whsec_<base64>");
  const raw = Uint8Array.from(atob(b64.slice("whsec_".length)), (c) => c.charCodeAt(0));
  const key = await crypto.subtle.importKey("raw", raw, { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
  const ts = Math.floor(now.getTime() / 1000).toString();
  const mac = new Uint8Array(await crypto.subtle.sign("HMAC", key, new TextEncoder().encode(`${id}.${ts}.${body}`)));
  return {
    "webhook-id": id,
    "webhook-timestamp": ts,
    "webhook-signature": `v1,${btoa(String.fromCharCode(...mac))}`,
  };
}

/**
 * Sends a score to POST /hooks/scores. The id is `score_<submission_id>`, so
 * a resend of the same submission (a retry here, or the trigger firing twice)
 * is stored once.
 */
export function pushScore(baseUrl: string, secret: string, score: Score): Promise<void> {
  return post(baseUrl, "/hooks/scores", secret, `score_${score.submission_id}`, JSON.stringify(score));
}

/**
 * Registers or updates an exam through POST /hooks/exams. Retries of one call
 * share one id. Without an id, each call gets a fresh one: not a hash of the
 * body, because invigil drops a repeated id, and an exam going back to a
 * state it had (open, closed, open again) would then be dropped too. Pass an
 * id that changes with every edit (e.g. `exam_${exam_id}_${updated_at}`) to
 * also make duplicate trigger runs no-ops.
 */
export function pushExam(baseUrl: string, secret: string, exam: Exam, id?: string): Promise<void> {
  return post(baseUrl, "/hooks/exams", secret, id ?? `exam_${exam.exam_id}_${crypto.randomUUID()}`, JSON.stringify(exam));
}

// post delivers body, retrying network errors (a try that takes longer than
// TRY_TIMEOUT_MS among them), 408, 429 and 5xx with exponential backoff
// (0.5 s, 1 s, 2 s, 4 s, plus jitter, or the server's Retry-After when
// longer) up to MAX_TRIES; any other 4xx is final. Each try is signed afresh
// (a new timestamp) under the same id.
async function post(baseUrl: string, path: string, secret: string, id: string, body: string): Promise<void> {
  const url = baseUrl.replace(/\/+$/, "") + path;
  for (let attempt = 1;; attempt++) {
    const headers = { "content-type": "application/json", ...(await signWebhook(secret, id, body)) };
    let problem: string;
    let retryAfterMs = 0;
    try {
      const res = await fetch(url, { method: "POST", headers, body, signal: AbortSignal.timeout(TRY_TIMEOUT_MS) });
      const text = await res.text();
      if (res.ok) return;
      problem = `${res.status} ${text.slice(0, 200)}`;
      if (res.status < 500 && res.status !== 408 && res.status !== 429) {
        // A 4xx other than timeout or rate limit: retrying will not help.
        throw new RefusedError(`invigil: ${path} refused ${id}: ${problem}`);
      }
      retryAfterMs = Math.min(Number(res.headers.get("retry-after")) * 1000 || 0, MAX_RETRY_AFTER_MS);
    } catch (err) {
      if (err instanceof RefusedError) throw err;
      problem = String(err); // network error or timeout
    }
    if (attempt >= MAX_TRIES) throw new Error(`invigil: ${path} failed ${MAX_TRIES} times for ${id}: ${problem}`);
    const delay = 500 * 2 ** (attempt - 1);
    await new Promise((r) => setTimeout(r, Math.max(retryAfterMs, delay + Math.random() * delay / 2)));
  }
}

/** Thrown when invigil refuses a message (4xx); it is not retried. */
export class RefusedError extends Error {}
