// frontend/src/main.tsx: the provider wraps the app once. It takes the
// platform's Supabase client as it is: tokens come from its session and
// follow its refreshes and sign-outs (onAuthStateChange).
import { StrictMode } from 'react';
import { createRoot } from 'react-dom/client';
import { InvigilProvider } from '@invigil/invigil-react.js';
import { supabase } from './supabase';
import { App } from './App';

// For static/react_browser_test.go: the tests drive Supabase's session (refresh, sign-out).
(window as unknown as { __supabase: typeof supabase }).__supabase = supabase;

createRoot(document.getElementById('root')!).render(
  <StrictMode>
    <InvigilProvider supabase={supabase} url={import.meta.env.VITE_INVIGIL_URL || undefined}>
      <App />
    </InvigilProvider>
  </StrictMode>,
);
