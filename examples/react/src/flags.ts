// The rollout flags (plan §7): each feature goes through invigil only when
// its flag is "true". Anything else, or unset, keeps the platform's existing
// Supabase implementation, so rolling back is flipping one flag to false and
// redeploying the frontend: no invigil change, no data migration (Supabase
// stays the source of truth).
export const flags = {
  proctoring: import.meta.env.VITE_USE_INVIGIL_PROCTORING === 'true',
  chat: import.meta.env.VITE_USE_INVIGIL_CHAT === 'true',
  leaderboard: import.meta.env.VITE_USE_INVIGIL_LEADERBOARD === 'true',
} as const;

export type Feature = keyof typeof flags;
