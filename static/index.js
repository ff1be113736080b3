// Home page: links to every page and who is signed in (as the token says, and
// as the server confirms over the socket).
import { connect } from '/static/invigil.js';
import {
  pageGetToken, tokenIdentity, storedToken, storedDemoUser, signOut,
  connIndicator, renderWho, h, setText,
} from '/static/common.js';
import { mountChatWidget } from '/static/chatwidget.js';

const identityEl = document.getElementById('identity');
const whoEl = document.getElementById('who');
const signoutBtn = document.getElementById('signout');
const signinLink = document.getElementById('signin-link');

function showLocal() {
  const ident = tokenIdentity();
  identityEl.replaceChildren();
  if (!ident) {
    identityEl.append('Nobody is signed in. Pages that need an account will ask you to sign in.');
    renderWho(whoEl, null);
    signoutBtn.hidden = true;
    setText(signinLink, 'Sign in as a demo user');
    return;
  }
  identityEl.append(
    h('strong', null, ident.name || ident.id), ' ',
    h('span', { class: 'muted' }, `(${ident.id}, ${ident.role})`),
    ident.expired ? h('span', { class: 'error-text' }, ' — token expired') : '',
    storedDemoUser() ? h('span', { class: 'badge' }, 'demo') : '',
  );
  renderWho(whoEl, ident);
  signoutBtn.hidden = false;
  setText(signinLink, 'Switch user');
}
showLocal();

// Only signed-in visitors need a socket (a token-less one that subscribes to
// nothing is closed by the server after 10 s).
const connEl = document.getElementById('conn');
const indicator = connIndicator(connEl);
let client = null;
if (storedToken() || storedDemoUser()) {
  client = connect({
    getToken: pageGetToken,
    onState(state) {
      indicator(state);
      if (state === 'online' && client?.user) {
        renderWho(whoEl, client.user);
        document.getElementById('server-user')?.remove();
        identityEl.append(h('div', { class: 'small muted', id: 'server-user' },
          `Server confirms: ${client.user.name} (${client.user.id}, ${client.user.role}).`));
      }
    },
  });
} else {
  connEl.hidden = true;
}

signoutBtn.addEventListener('click', () => {
  signOut();
  client?.close();
  client = null;
  connEl.hidden = true;
  document.getElementById('server-user')?.remove();
  showLocal();
});

document.getElementById('goto').addEventListener('submit', (ev) => {
  ev.preventDefault();
  const id = document.getElementById('goto-exam').value.trim();
  if (!id) return;
  const target = ev.submitter?.dataset.target === 'exam' ? 'exam' : 'proctor';
  location.href = `/${target}/${encodeURIComponent(id)}`;
});

// ------------------------------------------------------------------ support chat (issue 8)

// Students and tutors ask support from here (chatwidget.js); agents and
// admins answer at /support.
let help = null;
client?.onStateChange((state) => {
  const u = client?.user;
  if (state !== 'online' || !u || help) return;
  if (u.role === 'agent' || u.role === 'admin') return;
  help = mountChatWidget({ client, me: u, scope: 'support', title: 'Help' });
  if (location.hash === '#help') help.open();
});
signoutBtn.addEventListener('click', () => { help?.destroy(); help = null; });
document.getElementById('link-help').addEventListener('click', (ev) => {
  ev.preventDefault();
  if (help) help.open();
  else if (client?.user && (client.user.role === 'agent' || client.user.role === 'admin')) location.href = '/support';
  else location.href = '/signin?next=' + encodeURIComponent('/#help');
});
