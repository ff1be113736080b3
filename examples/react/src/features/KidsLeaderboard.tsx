// The kids' projector (plan §5D): the quiz's live board. Public: it works
// with nobody signed in (the socket then carries no token).
import { useLeaderboard, useQuery } from '@invigil/invigil-react.js';

export function KidsLeaderboard({ quizCode }: { quizCode: string }) {
  const board = useLeaderboard(quizCode, { limit: 10 });
  const quiz = useQuery('leaderboard.getQuiz', { quiz_code: quizCode });
  if (board === undefined) return <p id="loading">Loading the board…</p>;
  return (
    <section id="board" data-backend="invigil">
      <h1>{quiz?.title ?? quizCode}</h1>
      <p>
        <span id="players">{quiz?.players ?? 0}</span> players
      </p>
      <ol>
        {board.map((e) => (
          <li key={e._id} className="entry" data-id={e._id}>
            <span className="rank">{e.rank}</span> <span className="nick">{e.nickname}</span>{' '}
            <span className="score">{e.score}</span>
          </li>
        ))}
      </ol>
    </section>
  );
}
