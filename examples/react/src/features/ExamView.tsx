// The student's exam (frontend/src/pages/ExamView.tsx) with invigil's
// proctoring: useProctoring starts the session once (StrictMode's double
// mount included), heartbeats with the student's progress, reports the
// violations its listeners see, and submit() ends the session.
import { useEffect, useState } from 'react';
import { useProctoring } from '@invigil/invigil-react.js';
import { countMount } from '../testhooks';
import { QUESTIONS, Question } from './questions';

export function ExamView({ examId }: { examId: string }) {
  const [answers, setAnswers] = useState<Record<number, number>>({});
  const [current, setCurrent] = useState(0);
  const answeredCount = Object.keys(answers).length;
  const proctoring = useProctoring(examId, { currentQuestion: current + 1, answeredCount });
  useEffect(() => countMount('ExamView'), []);

  if (proctoring.phase === 'error') {
    return <p id="status" data-phase="error" data-code={proctoring.error?.code}>You cannot take this exam ({proctoring.error?.code}).</p>;
  }
  if (proctoring.phase === 'submitted') {
    return <p id="status" data-phase="submitted">Submitted. You can close this tab.</p>;
  }
  return (
    <section id="exam" data-backend="invigil">
      <p id="status" data-phase={proctoring.phase}>
        {proctoring.phase === 'active' ? 'In progress' : proctoring.phase === 'submitting' ? 'Submitting…' : 'Starting…'}
        {' · '}events recorded on this device: <span id="recorded">{proctoring.recorded}</span>
      </p>
      <Question
        index={current}
        chosen={answers[current]}
        onChoose={(j) => setAnswers((a) => ({ ...a, [current]: j }))}
      />
      <nav>
        <button id="prev" disabled={current === 0} onClick={() => setCurrent((c) => c - 1)}>Previous</button>
        <button id="next" disabled={current === QUESTIONS.length - 1} onClick={() => setCurrent((c) => c + 1)}>Next</button>
        <button id="submit" disabled={proctoring.phase !== 'active'} onClick={() => proctoring.submit().catch(() => {})}>
          Submit
        </button>
      </nav>
      {proctoring.error && <p id="submit-error">Not submitted: {proctoring.error.message}</p>}
    </section>
  );
}
