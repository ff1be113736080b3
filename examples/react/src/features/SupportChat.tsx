// Placeholder until chat lands on main: see useChat in docs/integration.md.
export function SupportChat({ sessionId }: { sessionId?: string }) {
  return (
    <section id="chat" data-backend="invigil" data-session-id={sessionId ?? ''}>
      <h1>Support</h1>
    </section>
  );
}
