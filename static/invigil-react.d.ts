/**
 * Types for invigil-react.js: the React bindings over invigil.js.
 * React is a peer dependency (types from @types/react).
 */

import type { ReactElement, ReactNode } from 'react';
import type {
  Attachment,
  Change,
  ChatMessage,
  ChatSession,
  ConnectOptions,
  ConnectionState,
  FunctionArgs,
  FunctionName,
  FunctionResult,
  InvigilClient,
  InvigilError,
  LeaderboardEntry,
  ListSessionsArgs,
  PresenceRow,
  PresenceScope,
  ProctoringSession,
  QueryArgs,
  QueryName,
  QueryValue,
  ReadReceipt,
  User,
  ViolationType,
} from './invigil.js';

/**
 * What the provider needs of a Supabase client (`createClient(…)` from
 * @supabase/supabase-js fits): the session's access token, a refresh, and
 * auth events.
 */
export interface SupabaseLike {
  auth: {
    getSession(): Promise<{ data: { session: { access_token: string } | null } }>;
    refreshSession(): Promise<unknown>;
    onAuthStateChange(
      callback: (event: string, session: { access_token: string } | null) => void,
    ): { data: { subscription: { unsubscribe(): void } } };
  };
}

export interface InvigilProviderProps {
  /** The platform's Supabase client: tokens from auth.getSession(), re-sent on onAuthStateChange. */
  supabase?: SupabaseLike | null;
  /** invigil's ws(s)://…/ws; default: ws(s)://<page's host>/ws. */
  url?: string;
  /** Instead of `supabase`: the access token, or null (signed out: public queries only). */
  getToken?: ConnectOptions['getToken'];
  /** Instead of all the above: a client of your own (never closed by the provider). */
  client?: InvigilClient;
  /** More connect() options (backoff, timeouts). */
  options?: Omit<ConnectOptions, 'url' | 'getToken'>;
  /** How long a query no component uses stays subscribed (0: until the next tick). */
  keepAliveMs?: number;
  children?: ReactNode;
}

/** Holds one invigil client for the tree; it connects when the first hook needs it and closes on unmount. */
export declare function InvigilProvider(props: InvigilProviderProps): ReactElement;

/** The provider's client (an InvigilClient that connects on first use; its close() throws: the provider closes it on unmount). */
export declare function useInvigil(): InvigilClient;

export interface QueryState<T> {
  status: 'skipped' | 'loading' | 'ready' | 'error';
  /** The value; after an error, the last one before it (if any). */
  value: T | undefined;
  error: InvigilError | null;
  /** What the last update changed (rows upserted/removed, or full). */
  change: Change | null;
}

/**
 * A query's current value: undefined while loading or skipped ("skip" as
 * args); re-renders on every change. Equal args (by value) keep the same
 * subscription. An error ending the subscription is thrown (error boundary).
 */
export declare function useQuery<Q extends QueryName>(query: Q, args: QueryArgs<Q> | 'skip'): QueryValue<Q> | undefined;

/** As useQuery, with the status and the error instead of a throw. */
export declare function useQueryState<Q extends QueryName>(query: Q, args: QueryArgs<Q> | 'skip'): QueryState<QueryValue<Q>>;

/** A stable function that calls fn. Rejects with an InvigilError. */
export declare function useCall<F extends FunctionName>(fn: F): (args: FunctionArgs<F>) => Promise<FunctionResult<F>>;

export declare function useConnectionState(): ConnectionState;

/** The signed-in user once the socket is authenticated, else null. */
export declare function useInvigilUser(): User | null;

/** A quiz's live board, best first (public: works signed out). */
export declare function useLeaderboard(
  quizCode: string | null | undefined,
  options?: { limit?: number },
): LeaderboardEntry[] | undefined;

export type ProctoringPhase = 'idle' | 'starting' | 'active' | 'submitting' | 'submitted' | 'error';

export interface ProctoringOptions {
  /** The question the student is on (sent 1-based, as the student sees it). */
  currentQuestion?: number;
  answeredCount?: number;
  /** Heartbeat period (10 s); the server refuses heartbeats under 5 s apart. */
  heartbeatMs?: number;
  /** Attach the exam view's violation listeners (tab hidden, blur, fullscreen exit, copy, paste, context menu, offline); default true. */
  listeners?: boolean;
}

export interface Proctoring {
  phase: ProctoringPhase;
  /** The session as startSession (then endSession) returned it. */
  session: ProctoringSession | null;
  /** Why phase is error (final), or why the last submit failed. */
  error: InvigilError | null;
  /** Violations recorded on this device. */
  recorded: number;
  /** The server's time at the last heartbeat it accepted. */
  serverTime: string | null;
  /** Report a violation the listeners cannot see (say, devtools). */
  report(type: ViolationType, detail?: string): void;
  /** End the session (submitted). Retries a dropped call; resolves with the session. */
  submit(): Promise<ProctoringSession | null>;
}

/**
 * Proctor the signed-in student's session of examId: one startSession per
 * exam (also under StrictMode's double mount, and with several components),
 * heartbeats, violation listeners; submit() ends it. Unmounting stops
 * heartbeats and listeners without submitting.
 */
export declare function useProctoring(examId: string | null | undefined, options?: ProctoringOptions): Proctoring;

/** The chats the user may see (chat.listSessions), newest activity first; undefined while loading. */
export declare function useChatSessions(args?: ListSessionsArgs): ChatSession[] | undefined;

/** A message as useChat shows it: the server's, or one of the user's own not yet confirmed. */
export interface ChatItem extends ChatMessage {
  /** Sent by this page and not in the server's list yet (its _id is "pending:<client_msg_id>", seq 0). */
  pending?: true;
  /** The server accepted it; it shows as the server's copy once the list brings it. */
  sent?: true;
  /** Refused (not retried): retry(client_msg_id) or discard(client_msg_id). */
  error?: InvigilError;
}

export interface Chat {
  /** Oldest first, the user's unconfirmed messages last; undefined while loading. Each message shows once. */
  messages: ChatItem[] | undefined;
  status: QueryState<ChatMessage[]>['status'];
  error: InvigilError | null;
  /** Who is in the chat's presence scope. */
  presence: PresenceRow[] | undefined;
  /** The others typing now. */
  typing: PresenceRow[];
  /** Show the message at once, send it (retrying a dropped call under the same client_msg_id). */
  send(body: string, options?: { attachments?: Attachment[] }): Promise<ChatMessage>;
  retry(clientMsgId: string): Promise<ChatMessage>;
  discard(clientMsgId: string): void;
  /** Read up to a message (default: the newest); null when there was nothing to mark. */
  markRead(upToMessageId?: string): Promise<ReadReceipt | null>;
  /** Call with true on each keystroke (sent at most every 2.5 s) and false when the user stops. */
  setTyping(typing: boolean): void;
}

/** One chat (null/undefined: none yet): messages with optimistic sends, read receipts, typing. */
export declare function useChat(sessionId: string | null | undefined, options?: { limit?: number }): Chat;

/**
 * Be present in scope and see who is (undefined while loading). Entered
 * again after every reconnect; a new scope moves the presence; it ends
 * when the socket closes.
 */
export declare function usePresence(
  scope: PresenceScope | null | undefined,
  options?: { displayName?: string },
): PresenceRow[] | undefined;

/** A random id (crypto.randomUUID when there is one), for client_msg_id and client_id. */
export declare function randomId(): string;
