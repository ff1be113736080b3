// Stand-in for the platform's chat before invigil: ChatWidget over
// RealtimeChatService (Supabase Realtime channels: postgres_changes for
// messages, broadcast for typing, presence per channel). The flag
// VITE_USE_INVIGIL_CHAT=false keeps it; docs/integration.md shows the swap.
export function LegacySupportChat() {
  return (
    <section id="chat" data-backend="supabase">
      <h1>Support</h1>
      <p>Chat over Supabase Realtime (RealtimeChatService).</p>
    </section>
  );
}
