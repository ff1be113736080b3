// Stand-in for the platform before invigil: there was no live view (plan §1,
// "no live tutor visibility"); tutors read submissions after the fact.
export function LegacyProctorDashboard({ examId }: { examId: string }) {
  return (
    <section id="dashboard" data-backend="supabase">
      <h1>Exam {examId}</h1>
      <p>Live proctoring is off. Violations appear with each submission once it is graded.</p>
    </section>
  );
}
