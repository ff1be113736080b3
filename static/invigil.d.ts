/**
 * Types for invigil.js: the contract's functions, queries, arguments and
 * results (CONTRACT §4), and the client's API (`connect`, `subscribe`,
 * `call`, `createQueryStore`).
 *
 * `client.call(fn, args)` and `client.subscribe(query, args, onData)` are
 * typed per name through the `Functions` and `Queries` maps below: a wrong
 * name, a missing argument or a misspelt field is a compile error, and the
 * result is typed.
 *
 * The part between the two "wire types" markers is checked against the Go
 * definitions (app/api's table) by app/api/types_test.go: a field added,
 * removed, renamed, made optional or nullable, or given another JSON type on
 * either side fails that test. Keep that part to the forms the checker reads:
 * `export type X = …;` and `export interface X [extends Y] { field[?]: T; }`
 * with T built from string, number, boolean, null, unknown, 'literals',
 * names declared here, T[], Record<string, T> and unions.
 */

// --- wire types (checked against app/api by app/api/types_test.go) ---

/** What a student's page may report (proctoring.logViolation's `type`). */
export type ViolationType =
  | 'tab_hidden'
  | 'window_blur'
  | 'fullscreen_exit'
  | 'copy'
  | 'paste'
  | 'context_menu'
  | 'devtools'
  | 'multiple_screens'
  | 'network_offline'
  | 'other';

/** A proctoring session's status. */
export type SessionStatus = 'active' | 'disconnected' | 'submitted';

/** A user's role: `app_metadata.role` of their Supabase token (none: student). */
export type Role = 'student' | 'tutor' | 'agent' | 'admin';

/** `{exam_id}`: proctoring.startSession, endSession, getExamSessions. */
export interface ExamArgs {
  exam_id: string;
}

/** What a heartbeat may say about the student's connection (navigator.connection). */
export interface HeartbeatNetwork {
  rtt_ms?: number;
  downlink_mbps?: number;
  effective_type?: string;
}

export interface HeartbeatArgs {
  exam_id: string;
  /** The question the student is on (the exam view sends it 1-based). */
  current_question: number;
  answered_count: number;
  network?: HeartbeatNetwork;
}

export interface HeartbeatResult {
  /** RFC 3339, the server's clock. */
  server_time: string;
}

export interface ViolationArgs {
  exam_id: string;
  type: ViolationType;
  /** At most 1000 characters; never put copied text here. */
  detail?: string;
  /** RFC 3339, when the page saw it (the server adds its own created_at). */
  client_ts?: string;
  /** Makes a retry idempotent: the same client_id twice stores one violation. */
  client_id?: string;
}

export interface SessionArgs {
  exam_id: string;
  student_id: string;
}

export interface ViolationsArgs {
  exam_id: string;
  /** 1 to 500; default 50. */
  limit?: number;
}

/** The newest violation's type and server time. */
export interface LastViolation {
  type: ViolationType;
  created_at: string;
}

/** One row of the tutor's grid (proctoring.getExamSessions); also what startSession and endSession return. */
export interface ProctoringSession {
  _id: string;
  exam_id: string;
  student_id: string;
  student_name: string;
  status: SessionStatus;
  current_question: number;
  answered_count: number;
  violation_count: number;
  last_violation: LastViolation | null;
  last_heartbeat: string;
  started_at: string;
  ended_at: string | null;
}

/** One violation (proctoring.getViolations, newest first). */
export interface Violation {
  _id: string;
  exam_id: string;
  student_id: string;
  student_name: string;
  type: ViolationType;
  detail: string;
  /** When the student's page saw it, as it said; null when it did not say. */
  client_ts: string | null;
  /** When the server stored it. */
  created_at: string;
}

/** proctoring.getSession: one session with its last network figures and violations (newest first). */
export interface SessionDetail extends ProctoringSession {
  network: HeartbeatNetwork | null;
  violations: Violation[];
}

/** A chat's kind: a support chat (agents answer) or an exam room (the exam's tutors answer). */
export type ChatScope = 'support' | 'exam';

/** waiting (nobody answers yet) → active (assigned) → ended. */
export type ChatStatus = 'waiting' | 'active' | 'ended';

export interface StartChatArgs {
  scope: ChatScope;
  /** Required for an exam room, absent for support. */
  exam_id?: string;
}

export interface AssignAgentArgs {
  session_id: string;
  /** Absent: the caller takes the chat. */
  agent_id?: string;
}

/** A file stored elsewhere (Supabase Storage): an https URL, never the bytes. */
export interface Attachment {
  url: string;
  name: string;
  size: number;
  mime: string;
}

export interface SendMessageArgs {
  session_id: string;
  /** 1 to 4000 characters. */
  body: string;
  /** The client's id for this message: the same one twice stores one message (a retry). */
  client_msg_id: string;
  attachments?: Attachment[];
}

export interface MarkReadArgs {
  session_id: string;
  /** The newest message read: it and every one before it are read. */
  up_to_message_id: string;
}

export interface SetTypingArgs {
  session_id: string;
  typing: boolean;
}

/** `{session_id}`: chat.endChat. */
export interface ChatSessionArgs {
  session_id: string;
}

export interface ListSessionsArgs {
  scope?: ChatScope;
  status?: ChatStatus;
  /** An exam's rooms (its tutors see all of them, its students their own). */
  exam_id?: string;
  /** 1 to 500; default 100. */
  limit?: number;
}

export interface GetMessagesArgs {
  session_id: string;
  /** 1 to 200; default 50 (the newest). */
  limit?: number;
  /** A message id: the ones before it (paging back). */
  before?: string;
}

/** One chat (chat.listSessions, newest activity first; what startChat, assignAgent and endChat return). */
export interface ChatSession {
  _id: string;
  scope: ChatScope;
  exam_id: string | null;
  student_id: string;
  student_name: string;
  assigned_to: string | null;
  status: ChatStatus;
  created_at: string;
  last_message_at: string | null;
  assigned_name: string | null;
  ended_at: string | null;
  /** The last message's seq. */
  message_count: number;
  last_sender_id: string | null;
  /** The start of the last message. */
  last_message: string | null;
  /** Each reader's mark: user id → the seq read up to (unread = message_count - mark). */
  read_up_to: Record<string, number>;
}

/** One message (chat.getMessages, oldest first). */
export interface ChatMessage {
  _id: string;
  session_id: string;
  client_msg_id: string;
  sender_id: string;
  sender_name: string;
  sender_role: Role;
  body: string;
  attachments: Attachment[];
  created_at: string;
  /** User ids of those who read it. */
  read_by: string[];
  /** 1, 2, 3… in the chat. */
  seq: number;
}

/** What chat.markRead returns. */
export interface ReadReceipt {
  session_id: string;
  up_to_message_id: string;
  up_to_seq: number;
}

/** What chat.setTyping returns. */
export interface TypingState {
  session_id: string;
  typing: boolean;
}

/** `{scope, display_name?}`: presence.touchPresence and presence.setScope. Scopes: "global", "exam:<exam_id>", "chat:<session_id>". */
export interface PresenceArgs {
  scope: string;
  display_name?: string;
}

export interface ListPresenceArgs {
  scope: string;
  /** 1 to 5000; default 500. */
  limit?: number;
}

/** One person in a scope (presence.listPresence, by display name). _id is the user id. */
export interface PresenceRow {
  _id: string;
  user_id: string;
  display_name: string;
  role: Role;
  /** In a chat's scope: typing now (clears itself after a few seconds). */
  is_typing: boolean;
  last_seen: string;
  online: boolean;
}

/** `{quiz_code, limit?}`: leaderboard.getLeaderboard (limit 1 to 100, default 10) and leaderboard.getQuiz. */
export interface LeaderboardArgs {
  quiz_code: string;
  limit?: number;
}

/** One row of a quiz's board: by score descending, then earliest submitted_at. Holds no student id. */
export interface LeaderboardEntry {
  _id: string;
  /** Equal score and submitted_at share a rank: 1, 2, 2, 4. */
  rank: number;
  nickname: string;
  score: number;
  max_score: number;
  /** score / max_score × 100, to one decimal. */
  percentage: number;
  submitted_at: string;
}

/** leaderboard.getQuiz: what a projector's header shows. */
export interface Quiz {
  quiz_code: string;
  title: string;
  players: number;
}

/** Every function: its arguments and what the call resolves to. */
export interface Functions {
  'proctoring.startSession': { args: ExamArgs; result: ProctoringSession };
  'proctoring.heartbeat': { args: HeartbeatArgs; result: HeartbeatResult };
  'proctoring.logViolation': { args: ViolationArgs; result: Violation };
  'proctoring.endSession': { args: ExamArgs; result: ProctoringSession };
  'chat.startChat': { args: StartChatArgs; result: ChatSession };
  'chat.assignAgent': { args: AssignAgentArgs; result: ChatSession };
  'chat.sendMessage': { args: SendMessageArgs; result: ChatMessage };
  'chat.markRead': { args: MarkReadArgs; result: ReadReceipt };
  'chat.setTyping': { args: SetTypingArgs; result: TypingState };
  'chat.endChat': { args: ChatSessionArgs; result: ChatSession };
  'presence.touchPresence': { args: PresenceArgs; result: PresenceRow };
  'presence.setScope': { args: PresenceArgs; result: PresenceRow };
}

/** Every query: its arguments and its whole value (a list query's value is its rows, in order). */
export interface Queries {
  'proctoring.getExamSessions': { args: ExamArgs; value: ProctoringSession[] };
  'proctoring.getSession': { args: SessionArgs; value: SessionDetail | null };
  'proctoring.getViolations': { args: ViolationsArgs; value: Violation[] };
  'chat.listSessions': { args: ListSessionsArgs; value: ChatSession[] };
  'chat.getMessages': { args: GetMessagesArgs; value: ChatMessage[] };
  'presence.listPresence': { args: ListPresenceArgs; value: PresenceRow[] };
  'leaderboard.getLeaderboard': { args: LeaderboardArgs; value: LeaderboardEntry[] };
  'leaderboard.getQuiz': { args: LeaderboardArgs; value: Quiz };
}

// --- end wire types ---

/** A presence scope: "global", "exam:<exam_id>" or "chat:<session_id>". */
export type PresenceScope = 'global' | `exam:${string}` | `chat:${string}`;

export type FunctionName = keyof Functions;
export type FunctionArgs<F extends FunctionName> = Functions[F]['args'];
export type FunctionResult<F extends FunctionName> = Functions[F]['result'];
export type QueryName = keyof Queries;
export type QueryArgs<Q extends QueryName> = Queries[Q]['args'];
export type QueryValue<Q extends QueryName> = Queries[Q]['value'];

/** A contract error code (CONTRACT §3). */
export type ErrorCode =
  | 'unauthenticated'
  | 'forbidden'
  | 'invalid_argument'
  | 'not_found'
  | 'conflict'
  | 'rate_limited'
  | 'too_large'
  | 'internal';

/**
 * The client's own codes: `disconnected` (the socket dropped after the call
 * was sent: it may or may not have run) and `closed` (client.close()).
 */
export type ClientErrorCode = 'disconnected' | 'closed';

/** Thrown by calls and passed to onError. */
export declare class InvigilError extends Error {
  constructor(code: ErrorCode | ClientErrorCode, message?: string, retryAfterMs?: number);
  readonly name: 'InvigilError';
  readonly code: ErrorCode | ClientErrorCode;
  /** With rate_limited: wait at least this long. */
  readonly retryAfterMs?: number;
}

export type ConnectionState = 'connecting' | 'online' | 'offline';

/** The signed-in user, from the server's `authed` frame. */
export interface User {
  id: string;
  role: Role;
  name: string;
}

/** Why the client asks for a token. */
export interface TokenRequest {
  reason: 'connect' | 'reconnect' | 'rejected' | 'refresh' | 'expired' | 'manual';
  /** True when the server refused or expired the last token, or ahead of its `exp`. */
  forceRefresh: boolean;
}

export interface ConnectOptions {
  /** ws(s) URL of invigil's /ws; default ws(s)://<location.host>/ws. */
  url?: string;
  /** The current access token, or null when signed out (only public queries work then). */
  getToken?: (req: TokenRequest) => Promise<string | null> | string | null;
  onState?: (state: ConnectionState) => void;
  /** Socket-level errors (no id). */
  onError?: (err: InvigilError) => void;
  /** Reconnect backoff base (250 ms). */
  baseDelayMs?: number;
  /** Reconnect backoff cap (10 s). */
  maxDelayMs?: number;
  /** Refresh the token this long before its `exp` (60 s). */
  refreshLeadMs?: number;
  /** Give up on an unanswered `auth` (15 s). */
  authTimeoutMs?: number;
  /** Retry a token whose signing key the server did not know yet (11 s). */
  keyRetryMs?: number;
  /** Ask for deltas (true). */
  deltas?: boolean;
  /** A WebSocket implementation (tests). */
  WebSocket?: typeof WebSocket;
}

/** What changed since the last onData. */
export type Change =
  | { full: true }
  | { full: false; upserted: string[]; removed: string[]; reordered: boolean };

export interface InvigilClient {
  readonly state: ConnectionState;
  readonly user: User | null;
  /**
   * Subscribe to a query: onData gets its whole value at once and again on
   * every change (a list: a fresh array; unchanged rows keep their identity).
   * An error ends the subscription. Returns unsubscribe.
   */
  subscribe<Q extends QueryName>(
    query: Q,
    args: QueryArgs<Q>,
    onData: (value: QueryValue<Q>, change: Change) => void,
    onError?: (err: InvigilError) => void,
  ): () => void;
  /** Call a function; queued while not online. Rejects with an InvigilError. */
  call<F extends FunctionName>(fn: F, args: FunctionArgs<F>): Promise<FunctionResult<F>>;
  /** Fetch a fresh token (getToken) and send it. */
  reauth(): void;
  /** Extra state listeners. Returns off(). */
  onStateChange(fn: (state: ConnectionState) => void): () => void;
  /** Stop for good: pending calls reject with `closed`. */
  close(): void;
}

export declare function connect(opts?: ConnectOptions): InvigilClient;

/** ws(s)://<current host>/ws */
export declare function defaultUrl(): string;

/** A JWT's payload, unverified, or null. */
export declare function decodeJwt(token: string): Record<string, unknown> | null;

export interface QuerySnapshot<T> {
  status: 'loading' | 'ready' | 'error';
  /** The last value; after an error, the value before it (if any). */
  value: T | undefined;
  error: InvigilError | null;
  change: Change | null;
}

/** A subscription as a store for useSyncExternalStore. */
export interface QueryStore<T> {
  subscribe(listener: () => void): () => void;
  getSnapshot(): QuerySnapshot<T>;
}

export declare function createQueryStore<Q extends QueryName>(
  client: InvigilClient,
  query: Q,
  args: QueryArgs<Q>,
): QueryStore<QueryValue<Q>>;
