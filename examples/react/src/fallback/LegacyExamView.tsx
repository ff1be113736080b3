// Stand-in for the platform's exam view before invigil (plan §1): violations
// are kept in a local array and nobody watches live. This is the path
// VITE_USE_INVIGIL_PROCTORING=false keeps; it never touches invigil.
import { useEffect, useState } from 'react';
import { QUESTIONS, Question } from '../features/questions';

export function LegacyExamView({ examId }: { examId: string }) {
  const [answers, setAnswers] = useState<Record<number, number>>({});
  const [current, setCurrent] = useState(0);
  const [log, setLog] = useState<{ type: string; at: string }[]>([]);
  const [submitted, setSubmitted] = useState(false);
  useEffect(() => {
    const onHidden = () => {
      if (document.visibilityState === 'hidden') setLog((l) => [...l, { type: 'tab_hidden', at: new Date().toISOString() }]);
    };
    document.addEventListener('visibilitychange', onHidden);
    return () => document.removeEventListener('visibilitychange', onHidden);
  }, []);
  if (submitted) return <p id="status" data-phase="submitted">Submitted (Supabase).</p>;
  return (
    <section id="exam" data-backend="supabase" data-exam-id={examId}>
      <p id="status" data-phase="local">In progress · local log: <span id="recorded">{log.length}</span></p>
      <Question index={current} chosen={answers[current]} onChoose={(j) => setAnswers((a) => ({ ...a, [current]: j }))} />
      <nav>
        <button id="prev" disabled={current === 0} onClick={() => setCurrent((c) => c - 1)}>Previous</button>
        <button id="next" disabled={current === QUESTIONS.length - 1} onClick={() => setCurrent((c) => c + 1)}>Next</button>
        {/* The platform inserts the submission (and its local violation log) into Supabase here. */}
        <button id="submit" onClick={() => setSubmitted(true)}>Submit</button>
      </nav>
    </section>
  );
}
