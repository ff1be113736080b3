// The platform's Supabase client (frontend/src/lib/supabase.ts), unchanged:
// invigil takes its session's access token as is.
import { createClient } from '@supabase/supabase-js';

export const supabase = createClient(import.meta.env.VITE_SUPABASE_URL, import.meta.env.VITE_SUPABASE_ANON_KEY, {
  auth: { flowType: 'pkce' },
});
