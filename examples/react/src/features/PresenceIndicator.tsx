// Who else is here (plan §5C PresenceIndicator): the people present in a
// scope, by name; usePresence also puts the user there (and back after a
// reconnect).
import { usePresence } from '@invigil/invigil-react.js';
import type { PresenceScope } from '@invigil/invigil.js';

export function PresenceIndicator({ scope }: { scope: PresenceScope }) {
  const people = usePresence(scope);
  if (!people) return null;
  return (
    <ul id="watching" aria-label="Here now">
      {people.filter((p) => p.online).map((p) => (
        <li key={p._id} data-user-id={p.user_id} data-role={p.role} title={p.role}>
          {p.display_name}
          {p.is_typing && ' ✎'}
        </li>
      ))}
    </ul>
  );
}
