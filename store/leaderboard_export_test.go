package store

// The leaderboard's hot reads, for the test that checks their query plans.
var LeaderboardReads = map[string]string{
	"top":   leaderboardTopSQL,
	"count": leaderboardCountSQL,
	"quiz":  quizExamsSQL,
}
