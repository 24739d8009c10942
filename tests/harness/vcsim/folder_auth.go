package main

import (
	"net/http"
	"strings"
	"sync"
)

// folderAuth makes /folder (datastore file access) require a session cookie that the SOAP endpoint
// handed out, as vCenter and ESXi do; the stock simulator serves those files to anyone.
type folderAuth struct {
	mu       sync.Mutex
	sessions map[string]bool
}

const sessionCookie = "vmware_soap_session"

func newFolderAuth() *folderAuth {
	return &folderAuth{sessions: map[string]bool{}}
}

type cookieRecorder struct {
	http.ResponseWriter
	auth *folderAuth
}

func (c *cookieRecorder) WriteHeader(code int) {
	for _, cookie := range (&http.Response{Header: c.Header()}).Cookies() { // parses Set-Cookie
		if cookie.Name == sessionCookie {
			c.auth.mu.Lock()
			c.auth.sessions[cookie.Value] = true
			c.auth.mu.Unlock()
		}
	}
	c.ResponseWriter.WriteHeader(code)
}

func (c *cookieRecorder) Write(b []byte) (int, error) {
	return c.ResponseWriter.Write(b)
}

func (a *folderAuth) handler(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/folder") {
			cookie, err := r.Cookie(sessionCookie)
			a.mu.Lock()
			known := err == nil && a.sessions[cookie.Value]
			a.mu.Unlock()
			if !known {
				http.Error(w, "not authenticated", http.StatusUnauthorized)
				return
			}
		}
		if strings.HasSuffix(r.URL.Path, "/sdk") {
			w = &cookieRecorder{ResponseWriter: w, auth: a}
		}
		next.ServeHTTP(w, r)
	})
}
