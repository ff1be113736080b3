// Package static holds the browser side of invigil: the client library
// (invigil.js), the demo pages and their shared stylesheet. The server serves
// FS at /static/ and the pages at their routes:
//
//	/                  index.html
//	/signin            signin.html   (demo mode; uses POST /demo/token)
//	/proctor/{exam_id} proctor.html
//	/exam/{exam_id}    exam.html
//	/kids/{quiz_code}  kids.html     (public: the leaderboard's projector)
//	/support           support.html  (the agents' chat console)
//
// Pages load their modules and styles by absolute path (/static/…), so they
// work under any route.
package static

import "embed"

// FS is this directory's pages, scripts and styles.
//
//go:embed *.html *.js *.css
var FS embed.FS
