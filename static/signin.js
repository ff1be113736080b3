// Demo sign-in: POST /demo/token {user_id, role, name} -> {token}; the token
// goes to localStorage["invigil.token"] and the chosen user (JSON) to
// localStorage["invigil.demo_user"] so pages can refresh the token when it
// expires. Then on to ?next= (same-origin paths only) or /.
import {
  fetchDemoToken, saveSignIn, signOut, tokenIdentity, renderWho, setText, errorText,
} from '/static/common.js';

const msgEl = document.getElementById('message');
const whoEl = document.getElementById('who');
const currentEl = document.getElementById('current');
const signoutBtn = document.getElementById('signout');

function nextUrl() {
  const n = new URLSearchParams(location.search).get('next');
  // Only a local path: "/x", never "//host" or "/\host" or a scheme.
  if (n && n.startsWith('/') && !n.startsWith('//') && !n.startsWith('/\\')) return n;
  return '/';
}

function showCurrent() {
  const ident = tokenIdentity();
  renderWho(whoEl, ident);
  setText(currentEl, ident ? `Currently signed in as ${ident.name} (${ident.id}, ${ident.role}).` : 'Not signed in.');
  signoutBtn.hidden = !ident;
}

function showError(text) {
  msgEl.replaceChildren(document.createTextNode(text));
  msgEl.hidden = false;
}

function setBusy(busy) {
  for (const b of document.querySelectorAll('button')) b.disabled = busy;
}

async function signIn(user) {
  msgEl.hidden = true;
  setBusy(true);
  try {
    const token = await fetchDemoToken(user);
    saveSignIn(token, user);
    location.assign(nextUrl());
  } catch (e) {
    setBusy(false);
    if (e && (e.status === 404 || e.status === 405)) {
      showError('Demo sign-in is not available: the server is not running in demo mode (go run . --demo).');
    } else if (e && 'status' in e) {
      showError(`The server refused the demo sign-in: ${e.message}`);
    } else {
      showError(errorText({ code: 'disconnected', message: 'could not reach the server' }));
    }
  }
}

for (const btn of document.querySelectorAll('#choices button[data-user-id]')) {
  btn.addEventListener('click', () => signIn({
    user_id: btn.dataset.userId,
    role: btn.dataset.role,
    name: btn.dataset.name,
  }));
}

function slug(s) {
  return s.toLowerCase().normalize('NFKD').replace(/[\u0300-\u036f]/g, '')
    .replace(/[^a-z0-9]+/g, '-').replace(/^-+|-+$/g, '').slice(0, 60);
}

document.getElementById('custom').addEventListener('submit', (ev) => {
  ev.preventDefault();
  const name = document.getElementById('custom-name').value.trim();
  if (!name) return;
  const role = document.getElementById('custom-role').value;
  const id = document.getElementById('custom-id').value.trim() || `${role}-${slug(name) || 'user'}`;
  signIn({ user_id: id, role, name });
});

signoutBtn.addEventListener('click', () => { signOut(); showCurrent(); });

showCurrent();
