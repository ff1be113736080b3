// Stand-in for the platform's leaderboard before invigil: a Supabase query
// of graded submissions, read once (and on "Refresh").
export function LegacyLeaderboard({ quizCode }: { quizCode: string }) {
  return (
    <section id="board" data-backend="supabase">
      <h1>{quizCode}</h1>
      <p>Scores from Supabase (not live). <button id="refresh">Refresh</button></p>
    </section>
  );
}
