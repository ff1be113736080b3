/**
 * Types for invigil-react.js: the React bindings over invigil.js.
 * React is a peer dependency (types from @types/react).
 */

import type { ReactElement, ReactNode } from 'react';
import type {
  Change,
  ConnectOptions,
  ConnectionState,
  FunctionArgs,
  FunctionName,
  FunctionResult,
  InvigilClient,
  InvigilError,
  LeaderboardEntry,
  ProctoringSession,
  QueryArgs,
  QueryName,
  QueryValue,
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

/** The provider's client (an InvigilClient that connects on first use). */
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

/** A random id (crypto.randomUUID when there is one), for client_msg_id and client_id. */
export declare function randomId(): string;
