// The tutor's live grid (plan §5A ProctorDashboard): every session of the
// exam and the violation stream, both live. A heartbeat changes one row:
// invigil sends a delta, invigil.js hands over a new array in which only
// that row is a new object, and the memoized rows below re-render only it.
import { memo } from 'react';
import { useQueryState } from '@invigil/invigil-react.js';
import type { ProctoringSession, Violation } from '@invigil/invigil.js';
import { countRender } from '../testhooks';
import { PresenceIndicator } from './PresenceIndicator';

export function ProctorDashboard({ examId }: { examId: string }) {
  const sessions = useQueryState('proctoring.getExamSessions', { exam_id: examId });
  const stream = useQueryState('proctoring.getViolations', { exam_id: examId, limit: 20 });
  countRender('dashboard');
  if (sessions.status === 'error') {
    return <p id="error" data-code={sessions.error?.code}>Cannot watch this exam: {sessions.error?.message}</p>;
  }
  if (sessions.value === undefined) return <p id="loading">Loading sessions…</p>;
  const active = sessions.value.filter((s) => s.status === 'active').length;
  return (
    <section id="dashboard" data-backend="invigil">
      <h1>Exam {examId}</h1>
      <PresenceIndicator scope={`exam:${examId}`} />
      <p>
        <span id="count-active">{active}</span> active of <span id="count-total">{sessions.value.length}</span>
      </p>
      <table>
        <thead>
          <tr><th>Student</th><th>Status</th><th>Question</th><th>Answered</th><th>Violations</th></tr>
        </thead>
        <tbody>
          {sessions.value.map((s) => <SessionRow key={s._id} session={s} />)}
        </tbody>
      </table>
      <h2>Violations</h2>
      <ul id="stream">
        {(stream.value ?? []).map((v) => <ViolationItem key={v._id} violation={v} />)}
      </ul>
    </section>
  );
}

const SessionRow = memo(function SessionRow({ session: s }: { session: ProctoringSession }) {
  countRender('row:' + s.student_id);
  return (
    <tr className="session" data-student-id={s.student_id} data-status={s.status}>
      <td className="name">{s.student_name}</td>
      <td className="status">{s.status}</td>
      <td className="question">{s.current_question}</td>
      <td className="answered">{s.answered_count}</td>
      <td className="violations">{s.violation_count}</td>
    </tr>
  );
});

const ViolationItem = memo(function ViolationItem({ violation: v }: { violation: Violation }) {
  return (
    <li data-type={v.type} data-student-id={v.student_id}>
      {v.student_name}: {v.type} {v.detail && `(${v.detail})`}
    </li>
  );
});
