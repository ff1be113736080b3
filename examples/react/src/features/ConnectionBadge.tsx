import { useConnectionState } from '@invigil/invigil-react.js';

export function ConnectionBadge() {
  const state = useConnectionState();
  return (
    <span id="conn" data-state={state}>
      {state === 'online' ? 'Live' : state === 'connecting' ? 'Connecting…' : 'Offline: retrying'}
    </span>
  );
}
