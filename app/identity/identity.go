// Package identity holds who a caller is, as every feature sees it: the
// Supabase user id, the role from app_metadata and a display name.
package identity

// Role is a caller's role, taken only from the token's app_metadata.role.
type Role string

const (
	Student Role = "student"
	Tutor   Role = "tutor"
	Agent   Role = "agent"
	Admin   Role = "admin"
)

// ParseRole maps a claim to a Role; anything unknown or absent is a student,
// the least privileged role.
func ParseRole(s string) Role {
	switch r := Role(s); r {
	case Tutor, Agent, Admin:
		return r
	default:
		return Student
	}
}

// User is an authenticated caller.
type User struct {
	ID   string `json:"id"`
	Role Role   `json:"role"`
	Name string `json:"name"`
}

// Anonymous reports whether no one is signed in (public leaderboard readers).
func (u User) Anonymous() bool { return u.ID == "" }
