export const QUESTIONS = [
  { text: 'Which planet is known as the Red Planet?', options: ['Venus', 'Mars', 'Jupiter'] },
  { text: 'What is 7 × 8?', options: ['54', '56', '64'] },
  { text: 'How many sides does a hexagon have?', options: ['5', '6', '8'] },
];

export function Question(props: { index: number; chosen: number | undefined; onChoose: (j: number) => void }) {
  const q = QUESTIONS[props.index];
  return (
    <fieldset id="question" data-index={props.index}>
      <legend>
        Question {props.index + 1} of {QUESTIONS.length}: {q.text}
      </legend>
      {q.options.map((o, j) => (
        <label key={o}>
          <input type="radio" name={`q${props.index}`} value={j} checked={props.chosen === j} onChange={() => props.onChoose(j)} />
          {o}
        </label>
      ))}
    </fieldset>
  );
}
