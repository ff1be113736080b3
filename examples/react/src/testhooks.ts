// Counters the browser tests read (window.__example): how often a component
// mounted (StrictMode mounts twice in development) and rendered.
function state() {
  return (window.__example ??= { mounts: {}, renders: {} });
}

export function countMount(name: string) {
  const s = state();
  s.mounts[name] = (s.mounts[name] ?? 0) + 1;
}

export function countRender(name: string) {
  const s = state();
  s.renders[name] = (s.renders[name] ?? 0) + 1;
}
