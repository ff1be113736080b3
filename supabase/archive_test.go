package supabase_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"invigil/app/proctoring"
)

// The people of these tests, by Supabase auth id, and the platform's exams.
const (
	student1 = "11111111-1111-4111-8111-111111111111"
	student2 = "22222222-2222-4222-8222-222222222222"
	tutor1   = "33333333-3333-4333-8333-333333333333"
	tutor2   = "44444444-4444-4444-8444-444444444444"
	agent    = "55555555-5555-4555-8555-555555555555"
	admin    = "66666666-6666-4666-8666-666666666666"
	exam1    = "e1e1e1e1-0000-4000-8000-000000000001"
	exam2    = "e2e2e2e2-0000-4000-8000-000000000002"
)

// names shows ids as the names above, so expectations read as prose.
var names = strings.NewReplacer(student1, "S1", student2, "S2", tutor1, "T1", tutor2, "T2",
	agent, "AG", admin, "AD", exam1, "E1", exam2, "E2")

// claims is a Supabase access token's payload as PostgREST hands it to
// PostgreSQL. appRole is app_metadata.role ("" leaves it out); userRole is
// user_metadata.role, which the user can set and which must grant nothing.
func claims(sub, appRole, userRole string) string {
	c := map[string]any{"sub": sub, "role": "authenticated", "aud": "authenticated",
		"app_metadata": map[string]any{"provider": "email"}, "user_metadata": map[string]any{"full_name": "X"}}
	if appRole != "" {
		c["app_metadata"].(map[string]any)["role"] = appRole
	}
	if userRole != "" {
		c["user_metadata"].(map[string]any)["role"] = userRole
	}
	b, _ := json.Marshal(c)
	return string(b)
}

// upsertSQL is what PostgREST runs for POST /rest/v1/<table>?on_conflict=<cols>
// with Prefer: resolution=merge-duplicates: the JSON rows typed by the
// table's columns, inserted, and on conflict every sent column updated.
func upsertSQL(t *testing.T, table, onConflict, body string) string {
	t.Helper()
	var rows []map[string]json.RawMessage
	if err := json.Unmarshal([]byte(body), &rows); err != nil || len(rows) == 0 {
		t.Fatalf("upsert body %s: %v", body, err)
	}
	var cols, sets []string
	for k := range rows[0] {
		cols = append(cols, k)
		sets = append(sets, k+" = excluded."+k)
	}
	list := strings.Join(cols, ", ")
	return fmt.Sprintf("insert into public.%s (%s) select %s from json_populate_recordset(null::public.%s, %s::json)\n"+
		"on conflict (%s) do update set %s;", table, list, list, table, literal(body), onConflict, strings.Join(sets, ", "))
}

// serviceUpsert upserts body into table as invigil does, with the service role.
func serviceUpsert(t *testing.T, db *database, table, onConflict, body string) {
	t.Helper()
	if _, err := db.as("service_role", `{"role":"service_role"}`, upsertSQL(t, table, onConflict, body)); err != nil {
		t.Fatalf("service role upsert into %s: %v", table, err)
	}
}

func summaryBody(t *testing.T, sums ...proctoring.Summary) string {
	t.Helper()
	b, err := json.Marshal(sums) // the very type invigil's outbox sends
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func summary(examID, studentID, status string) proctoring.Summary {
	end := "2026-03-02T10:00:00.000Z"
	return proctoring.Summary{ExamID: examID, StudentID: studentID, Status: status,
		StartedAt: "2026-03-02T09:00:00.000Z", EndedAt: &end, DurationS: 3600, ViolationCount: 2,
		ViolationsByType: json.RawMessage(`{"tab_hidden":2}`), Disconnects: 1}
}

// chatMessage is a chat_messages row as invigil archives it on endChat: the
// contract's message row with its session's scope, exam and student.
func chatMessage(id, scope, examID, studentID, senderID, senderRole string) map[string]any {
	var exam any
	if examID != "" {
		exam = examID
	}
	return map[string]any{"id": id, "session_id": "chat_" + scope + "_" + studentID[:2], "scope": scope,
		"exam_id": exam, "student_id": studentID, "client_msg_id": "c_" + id, "sender_id": senderID,
		"sender_name": "Zoë 🎓", "sender_role": senderRole, "body": "hello " + id,
		"attachments": []map[string]any{{"url": "https://x.test/a.png", "name": "a.png", "size": 12, "mime": "image/png"}},
		"read_by":     []string{senderID}, "created_at": "2026-03-02T09:05:00.000Z"}
}

func chatBody(t *testing.T, msgs ...map[string]any) string {
	t.Helper()
	b, err := json.Marshal(msgs)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// seedArchive registers the exams through the platform's exams table (whose
// trigger fills who teaches what) and archives, as invigil would:
// summaries E1/S1, E1/S2, E2/S2; support chats m1 (S1), m2 (S2) and m6
// (S2 asking support about E1); exam rooms m3 (E1, S1), m4 (E2, S2) and m5
// (T1's answer in S1's E1 room).
func seedArchive(t *testing.T, db *database) {
	t.Helper()
	db.mustRun(t, fmt.Sprintf(`insert into public.exams (id, title, tutor_id, status) values
		(%s, 'Algebra', %s, 'open'), (%s, 'Biology', %s, 'open');`,
		literal(exam1), literal(tutor1), literal(exam2), literal(tutor2)))
	serviceUpsert(t, db, "proctoring_summaries", "exam_id,student_id", summaryBody(t,
		summary(exam1, student1, "submitted"), summary(exam1, student2, "disconnected"),
		summary(exam2, student2, "submitted")))
	serviceUpsert(t, db, "chat_messages", "id", chatBody(t,
		chatMessage("m1", "support", "", student1, student1, "student"),
		chatMessage("m2", "support", "", student2, student2, "student"),
		chatMessage("m3", "exam", exam1, student1, student1, "student"),
		chatMessage("m4", "exam", exam2, student2, student2, "student"),
		chatMessage("m5", "exam", exam1, student1, tutor1, "tutor"),
		chatMessage("m6", "support", exam1, student2, student2, "student")))
}

// Queries that list what the caller sees, as JSON arrays of names.
const (
	seeSummaries = `select coalesce(json_agg(k order by k), '[]') from
		(select exam_id || '/' || student_id as k from public.proctoring_summaries) s`
	seeChats  = `select coalesce(json_agg(id order by id), '[]') from public.chat_messages`
	seeTutors = `select coalesce(json_agg(k order by k), '[]') from
		(select exam_id || '/' || tutor_id as k from public.invigil_exam_tutors) s`
	seeAll = `select json_build_object('Summaries', (` + seeSummaries + `), 'Chats', (` + seeChats +
		`), 'Tutors', (` + seeTutors + `))`
)

// sees runs one of the queries above with the given claims and decodes its
// result into v, the ids replaced by their names.
func seesInto(t *testing.T, db *database, claims, query string, v any) {
	t.Helper()
	out, err := db.asUser(claims, query+";")
	if err != nil {
		t.Fatalf("as %s: %v", names.Replace(claims), err)
	}
	if err := json.Unmarshal([]byte(names.Replace(out)), v); err != nil {
		t.Fatalf("%q: %v", out, err)
	}
}

// sees returns the list one of the see* queries returns.
func sees(t *testing.T, db *database, claims, query string) []string {
	t.Helper()
	var got []string
	seesInto(t, db, claims, query, &got)
	return got
}

// visible is what one caller sees of each table.
type visible struct{ Summaries, Chats, Tutors []string }

func TestRowLevelSecurity(t *testing.T) {
	db := mustDB(t)
	seedArchive(t, db)

	allSummaries := []string{"E1/S1", "E1/S2", "E2/S2"}
	allChats := []string{"m1", "m2", "m3", "m4", "m5", "m6"}
	tests := []struct {
		name   string
		claims string
		want   visible
	}{
		{name: "student reads own summary and chats", claims: claims(student1, "", ""),
			want: visible{Summaries: []string{"E1/S1"}, Chats: []string{"m1", "m3", "m5"}}},
		{name: "other student", claims: claims(student2, "student", ""),
			want: visible{Summaries: []string{"E1/S2", "E2/S2"}, Chats: []string{"m2", "m4", "m6"}}},
		{name: "user_metadata role admin grants nothing", claims: claims(student1, "", "admin"),
			want: visible{Summaries: []string{"E1/S1"}, Chats: []string{"m1", "m3", "m5"}}},
		{name: "tutor reads taught exam's summaries and rooms, no support chats", claims: claims(tutor1, "tutor", ""),
			want: visible{Summaries: []string{"E1/S1", "E1/S2"}, Chats: []string{"m3", "m5"}, Tutors: []string{"E1/T1"}}},
		{name: "other tutor", claims: claims(tutor2, "tutor", ""),
			want: visible{Summaries: []string{"E2/S2"}, Chats: []string{"m4"}, Tutors: []string{"E2/T2"}}},
		{name: "tutor's id without the tutor role reads nothing", claims: claims(tutor1, "", "tutor"),
			want: visible{Tutors: []string{"E1/T1"}}},
		{name: "agent reads support chats, no exam rooms, no summaries", claims: claims(agent, "agent", ""),
			want: visible{Chats: []string{"m1", "m2", "m6"}}},
		{name: "admin reads everything", claims: claims(admin, "admin", ""),
			want: visible{Summaries: allSummaries, Chats: allChats, Tutors: []string{"E1/T1", "E2/T2"}}},
		{name: "unknown role reads nothing", claims: claims(admin, "superuser", "")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got visible
			seesInto(t, db, tt.claims, seeAll, &got)
			if diff := cmp.Diff(tt.want, got, cmpNilIsEmpty); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}

	t.Run("anon reads nothing", func(t *testing.T) {
		for _, q := range []string{seeSummaries, seeChats, seeTutors} {
			if out, err := db.as("anon", `{"role":"anon"}`, q+";"); err == nil || !strings.Contains(err.Error(), "permission denied") {
				t.Errorf("anon %s = %s, %v; want permission denied", q, out, err)
			}
		}
	})
}

var cmpNilIsEmpty = cmp.Transformer("nilIsEmpty", func(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
})

// TestOnlyServiceRoleWrites: browsers, whatever their role, cannot insert,
// update or delete; only the service role can.
func TestOnlyServiceRoleWrites(t *testing.T) {
	db := mustDB(t)
	seedArchive(t, db)
	writes := map[string]string{
		"insert summary": fmt.Sprintf(`insert into public.proctoring_summaries (exam_id, student_id, status,
			started_at, duration_s, violation_count) values (%s, %s, 'submitted', now(), 0, 0);`,
			literal(exam2), literal(student1)),
		"update own summary":  `update public.proctoring_summaries set violation_count = 0;`,
		"delete own summary":  `delete from public.proctoring_summaries;`,
		"insert chat":         upsertSQL(t, "chat_messages", "id", chatBody(t, chatMessage("x1", "support", "", student1, student1, "student"))),
		"update chat":         `update public.chat_messages set body = 'edited';`,
		"delete chat":         `delete from public.chat_messages;`,
		"claim to teach exam": fmt.Sprintf(`insert into public.invigil_exam_tutors values (%s, %s);`, literal(exam2), literal(tutor1)),
		"drop a tutor":        `delete from public.invigil_exam_tutors;`,
	}
	for _, who := range []struct{ name, claims string }{
		{"student", claims(student1, "", "")}, {"tutor", claims(tutor1, "tutor", "")}, {"admin", claims(admin, "admin", "")},
	} {
		for name, sql := range writes {
			out, err := db.asUser(who.claims, sql)
			if err == nil || !strings.Contains(err.Error(), "permission denied") {
				t.Errorf("%s as %s = %q, %v; want permission denied", name, who.name, out, err)
			}
		}
	}
	if got := sees(t, db, claims(admin, "admin", ""), seeSummaries); len(got) != 3 {
		t.Errorf("after refused writes, summaries = %v", got)
	}
}

// TestServiceRoleUpsertIsIdempotent: invigil's retried delivery (the same
// rows again, or a newer state of them) leaves one row per key.
func TestServiceRoleUpsertIsIdempotent(t *testing.T) {
	db := mustDB(t)
	seedArchive(t, db)

	again := summary(exam1, student1, "submitted")
	again.ViolationCount, again.ViolationsByType = 3, json.RawMessage(`{"tab_hidden":2,"paste":1}`)
	msg := chatMessage("m1", "support", "", student1, student1, "student")
	msg["read_by"] = []string{student1, agent}
	for range 2 {
		serviceUpsert(t, db, "proctoring_summaries", "exam_id,student_id", summaryBody(t, again))
		serviceUpsert(t, db, "chat_messages", "id", chatBody(t, msg))
	}

	got := names.Replace(db.mustRun(t, `select json_build_object(
		'summaries', (select count(*) from public.proctoring_summaries),
		'chats', (select count(*) from public.chat_messages),
		'e1s1', (select json_build_object('status', status, 'violation_count', violation_count,
			'violations_by_type', violations_by_type, 'duration_s', duration_s, 'ended_at', ended_at)
			from public.proctoring_summaries where exam_id = `+literal(exam1)+` and student_id = `+literal(student1)+`),
		'm1', (select json_build_object('read_by', read_by, 'attachments', attachments, 'body', body)
			from public.chat_messages where id = 'm1'))`))
	want := `{"summaries" : 3, "chats" : 6, ` +
		`"e1s1" : {"status" : "submitted", "violation_count" : 3, "violations_by_type" : {"paste": 1, "tab_hidden": 2}, "duration_s" : 3600, "ended_at" : "2026-03-02T10:00:00+00:00"}, ` +
		`"m1" : {"read_by" : ["S1","AG"], "attachments" : [{"url": "https://x.test/a.png", "mime": "image/png", "name": "a.png", "size": 12}], "body" : "hello m1"}}`
	if diff := cmp.Diff(jsonValue(t, want), jsonValue(t, got)); diff != "" {
		t.Errorf("after upserting twice (-want +got):\n%s", diff)
	}
}

func jsonValue(t *testing.T, s string) any {
	t.Helper()
	var v any
	if err := json.Unmarshal([]byte(s), &v); err != nil {
		t.Fatalf("%s: %v", s, err)
	}
	return v
}
