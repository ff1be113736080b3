// The routes, each behind its flag: invigil's version, or the platform's
// existing Supabase one (src/fallback/). Hash routes keep the example
// servable by any static file server:
//   #/tutor/<exam_id>   ProctorDashboard   (VITE_USE_INVIGIL_PROCTORING)
//   #/exam/<exam_id>    ExamView           (VITE_USE_INVIGIL_PROCTORING)
//   #/kids/<quiz_code>  KidsLeaderboard    (VITE_USE_INVIGIL_LEADERBOARD)
//   #/support           SupportChat        (VITE_USE_INVIGIL_CHAT)
import { useEffect, useState } from 'react';
import { flags } from './flags';
import { ErrorBoundary } from './ErrorBoundary';
import { ConnectionBadge } from './features/ConnectionBadge';
import { ProctorDashboard } from './features/ProctorDashboard';
import { ExamView } from './features/ExamView';
import { KidsLeaderboard } from './features/KidsLeaderboard';
import { SupportChat } from './features/SupportChat';
import { LegacyProctorDashboard } from './fallback/LegacyProctorDashboard';
import { LegacyExamView } from './fallback/LegacyExamView';
import { LegacyLeaderboard } from './fallback/LegacyLeaderboard';
import { LegacySupportChat } from './fallback/LegacySupportChat';

function useHashRoute(): string[] {
  const [hash, setHash] = useState(() => window.location.hash);
  useEffect(() => {
    const onHash = () => setHash(window.location.hash);
    window.addEventListener('hashchange', onHash);
    return () => window.removeEventListener('hashchange', onHash);
  }, []);
  return hash.replace(/^#\/?/, '').split('/').map(decodeURIComponent);
}

export function App() {
  const [page, id] = useHashRoute();
  // Only a route that uses invigil shows its connection (and opens a socket).
  const live =
    ((page === 'tutor' || page === 'exam') && flags.proctoring) ||
    (page === 'kids' && flags.leaderboard) ||
    (page === 'support' && flags.chat);
  return (
    <div className="app" data-page={page || 'home'}>
      <header>
        <strong>Exam platform</strong> {live && <ConnectionBadge />}
      </header>
      <main>
        <ErrorBoundary key={page + '/' + id}>{route(page, id)}</ErrorBoundary>
      </main>
    </div>
  );
}

function route(page: string | undefined, id: string | undefined) {
  switch (page) {
    case 'tutor':
      return flags.proctoring ? <ProctorDashboard examId={id!} /> : <LegacyProctorDashboard examId={id!} />;
    case 'exam':
      return flags.proctoring ? <ExamView examId={id!} /> : <LegacyExamView examId={id!} />;
    case 'kids':
      return flags.leaderboard ? <KidsLeaderboard quizCode={id!} /> : <LegacyLeaderboard quizCode={id!} />;
    case 'support':
      return flags.chat ? <SupportChat sessionId={id} /> : <LegacySupportChat />;
    default:
      return (
        <nav>
          <a href="#/tutor/demo">Tutor dashboard</a> · <a href="#/exam/demo">Exam</a> ·{' '}
          <a href="#/kids/DEMO42">Projector</a> · <a href="#/support">Support chat</a>
        </nav>
      );
  }
}
