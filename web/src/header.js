// The top bar: home, what the page adds (title, connection, presence, bell), the user, sign out.
import { h } from './dom.js'

export function header (shell, extras) {
  return h('header', { class: 'topbar' },
    h('a', { href: '/', 'data-route': true, class: 'brand', 'aria-label': 'collab: all documents' }, 'collab'),
    h('div', { class: 'topbar-extras' }, extras || []),
    h('span', { class: 'me', 'data-testid': 'me' }, shell.me.name || shell.me.email),
    h('button', { type: 'button', class: 'link', onclick: shell.signOut }, 'Sign out'))
}
