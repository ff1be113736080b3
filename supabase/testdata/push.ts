// push.ts drives the real functions/_shared/invigil.ts for deno_test.go: it
// reads a list of calls as JSON on stdin, makes them one after another, and
// prints their outcomes ("ok", "refused" or "error: …") as a JSON array.
//
//   deno run --allow-net=127.0.0.1 push.ts <invigil base url> <whsec_ secret> < calls.json
import { type Exam, pushExam, pushScore, RefusedError, type Score } from "../functions/_shared/invigil.ts";

type Call = { fn: "pushScore"; arg: Score } | { fn: "pushExam"; arg: Exam; id?: string };

const [baseUrl, secret] = Deno.args;
const calls: Call[] = JSON.parse(await new Response(Deno.stdin.readable).text());
const outcomes: string[] = [];
for (const c of calls) {
  try {
    if (c.fn === "pushScore") await pushScore(baseUrl, secret, c.arg);
    else await pushExam(baseUrl, secret, c.arg, c.id);
    outcomes.push("ok");
  } catch (err) {
    outcomes.push(err instanceof RefusedError ? "refused" : `error: ${err}`);
  }
}
console.log(JSON.stringify(outcomes));
