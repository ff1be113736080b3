// Counters the browser tests read (window.__example): how often a component
// mounted (StrictMode mounts twice in development) and rendered.
function state() {
  return (window.__example ??= { mounts: {}, renders: {}, lists: {} });
}

export function countMount(name: string) {
  const s = state();
  s.mounts[name] = (s.mounts[name] ?? 0) + 1;
}

export function countRender(name: string) {
  const s = state();
  s.renders[name] = (s.renders[name] ?? 0) + 1;
}

// The ids a list rendered, render by render (a test looks for duplicates).
export function noteList(name: string, ids: string[]) {
  (state().lists[name] ??= []).push(ids);
}
