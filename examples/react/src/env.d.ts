/// <reference types="vite/client" />

interface ImportMetaEnv {
  /** invigil's ws(s)://…/ws; unset: the page's own host. */
  readonly VITE_INVIGIL_URL?: string;
  readonly VITE_SUPABASE_URL: string;
  readonly VITE_SUPABASE_ANON_KEY: string;
  /** "true" routes the feature through invigil; anything else keeps Supabase. */
  readonly VITE_USE_INVIGIL_PROCTORING?: string;
  readonly VITE_USE_INVIGIL_CHAT?: string;
  readonly VITE_USE_INVIGIL_LEADERBOARD?: string;
}

interface ImportMeta {
  readonly env: ImportMetaEnv;
}

interface Window {
  /** What the example records for its browser tests (static/react_browser_test.go). */
  __example?: {
    mounts: Record<string, number>;
    renders: Record<string, number>;
    lists: Record<string, string[][]>;
  };
}
