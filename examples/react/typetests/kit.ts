// Type tests of the kit: what must compile, and (@ts-expect-error) what
// must not. Run by `tsc -p tsconfig.kit.json` (static/react_test.go).
import { connect, type InvigilClient, type QueryValue } from '@invigil/invigil.js';
import {
  useCall, useChat, useChatSessions, useLeaderboard, usePresence, useProctoring, useQuery, useQueryState,
} from '@invigil/invigil-react.js';

declare const client: InvigilClient;
declare function expectType<T>(v: T): void;

export async function calls() {
  const s = await client.call('proctoring.startSession', { exam_id: 'e1' });
  expectType<string>(s.student_name);
  expectType<string | null>(s.ended_at);
  const hb = await client.call('proctoring.heartbeat', { exam_id: 'e1', current_question: 1, answered_count: 0 });
  expectType<string>(hb.server_time);
  await client.call('proctoring.logViolation', { exam_id: 'e1', type: 'copy', client_id: 'x' });
  // @ts-expect-error an unknown function
  await client.call('proctoring.pause', { exam_id: 'e1' });
  // @ts-expect-error a required argument missing
  await client.call('proctoring.heartbeat', { exam_id: 'e1', current_question: 1 });
  // @ts-expect-error a violation type the server refuses
  await client.call('proctoring.logViolation', { exam_id: 'e1', type: 'sneeze' });
  // @ts-expect-error a misspelt field
  await client.call('proctoring.startSession', { examId: 'e1' });
}

export function subscriptions() {
  const off = client.subscribe('proctoring.getExamSessions', { exam_id: 'e1' }, (rows, change) => {
    expectType<number>(rows[0].answered_count);
    if (!change.full) expectType<string[]>(change.upserted);
  });
  off();
  client.subscribe('proctoring.getSession', { exam_id: 'e1', student_id: 's1' }, (d) => {
    // @ts-expect-error getSession is null until the student starts
    expectType<string>(d.student_name);
    expectType<string | undefined>(d?.network?.effective_type);
  });
  // @ts-expect-error queries are not functions
  client.call('proctoring.getExamSessions', { exam_id: 'e1' });
  const value: QueryValue<'leaderboard.getLeaderboard'> = [];
  expectType<number | undefined>(value[0]?.rank);
  connect({ url: 'ws://x/ws', getToken: async () => null });
}

export function Hooks() {
  const rows = useQuery('proctoring.getExamSessions', { exam_id: 'e1' });
  expectType<number | undefined>(rows?.length);
  const skipped = useQuery('proctoring.getViolations', 'skip');
  expectType<undefined | { type: string }[]>(skipped);
  const state = useQueryState('leaderboard.getQuiz', { quiz_code: 'Q' });
  expectType<'skipped' | 'loading' | 'ready' | 'error'>(state.status);
  // @ts-expect-error a query's arguments are checked
  useQuery('leaderboard.getQuiz', { quiz: 'Q' });
  const end = useCall('proctoring.endSession');
  end({ exam_id: 'e1' }).then((s) => expectType<string>(s.status));
  const board = useLeaderboard('Q');
  expectType<string | undefined>(board?.[0].nickname);
  const p = useProctoring('e1', { currentQuestion: 1, answeredCount: 0 });
  p.report('devtools');
  // @ts-expect-error not a violation type
  p.report('yawn');
  return null;
}

export function ChatHooks() {
  const chat = useChat('c1');
  expectType<string | undefined>(chat.messages?.[0].client_msg_id);
  expectType<true | undefined>(chat.messages?.[0].pending);
  chat.send('hello').then((m) => expectType<number>(m.seq));
  chat.send('see attached', { attachments: [{ url: 'https://x/a.png', name: 'a.png', size: 1, mime: 'image/png' }] });
  // @ts-expect-error attachments are references, not files
  chat.send('x', { attachments: [new Blob()] });
  chat.setTyping(true);
  chat.markRead().then((r) => expectType<number | undefined>(r?.up_to_seq));
  const here = usePresence('exam:e1');
  expectType<boolean | undefined>(here?.[0].online);
  // @ts-expect-error not a presence scope
  usePresence('room:1');
  const sessions = useChatSessions({ scope: 'support', status: 'waiting' });
  expectType<string | null | undefined>(sessions?.[0].assigned_to);
  // @ts-expect-error not a chat status
  useChatSessions({ status: 'open' });
  return null;
}
