package exam

import (
	"context"
	"encoding/json"
	"time"

	"invigil/store"
)

// ReminderWindow is how long before its start an exam is announced.
const ReminderWindow = 15 * time.Minute

// Reminder is what INVIGIL_REMINDER_URL receives, once per exam and
// starts_at, signed as invigil's hooks are, webhook-id ReminderID.
type Reminder struct {
	Type     string  `json:"type"` // "exam.starting"
	ExamID   string  `json:"exam_id"`
	Title    string  `json:"title"`
	QuizCode *string `json:"quiz_code"`
	StartsAt string  `json:"starts_at"`
	EndsAt   *string `json:"ends_at"`
}

// ReminderID is the reminder's webhook-id: a receiver drops a repeat, and
// a rescheduled exam gets a new reminder.
func ReminderID(examID, startsAt string) string { return "reminder_" + examID + "_" + startsAt }

// EnqueueReminders puts a reminder in the outbox for every exam not closed
// that starts within ReminderWindow and has not had one for that start,
// and marks it reminded in the same write: a crash can neither lose a
// reminder nor send it twice. It returns how many it enqueued.
func (reg *Registry) EnqueueReminders(ctx context.Context) (int, error) {
	n := 0
	err := reg.db.Update(ctx, func(tx *store.Tx) error {
		n = 0
		exams, err := tx.ExamsToRemind(tx.Now(), tx.Now().Add(ReminderWindow))
		if err != nil {
			return err
		}
		for _, e := range exams {
			body, err := json.Marshal(Reminder{Type: "exam.starting", ExamID: e.ID, Title: e.Title,
				QuizCode: optional(e.QuizCode), StartsAt: e.StartsAt, EndsAt: optional(e.EndsAt)})
			if err != nil {
				return err
			}
			_, err = tx.EnqueueItem(store.OutboxItem{Sink: store.SinkReminder, Target: "exam_reminders",
				MsgID: ReminderID(e.ID, e.StartsAt), Body: string(body)})
			if err != nil {
				return err
			}
			if err := tx.MarkReminded(e.ID, e.StartsAt); err != nil {
				return err
			}
			n++
		}
		return nil
	})
	return n, err
}

// PurgeClosed deletes exams closed before cutoff that have no session left
// (each is purged only after its summary reached Supabase), and returns
// how many. Subscriptions to them end with not_found.
func (reg *Registry) PurgeClosed(ctx context.Context, before time.Time) (int, error) {
	var ids []string
	err := reg.db.Update(ctx, func(tx *store.Tx) (err error) {
		if ids, err = tx.PurgeClosedExams(before); err != nil {
			return err
		}
		for _, id := range ids {
			tx.Touch(Key(id))
		}
		return nil
	})
	return len(ids), err
}

func optional(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}
