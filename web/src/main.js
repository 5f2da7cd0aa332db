// The web editor: sign-in, the document list, and the document page (/d/{id}[/{section}]).
import { RestClient } from '@collab/client'
import { h, fill, toast } from './dom.js'
import { documentList } from './list.js'
import { openDocument } from './editor.js'

const rest = new RestClient('')
const app = document.getElementById('app')
let current = null // the open page: {close(), documentId?, openSection?()}

async function exchangeToken (token) {
  await new RestClient('', { token }).openSession()
}

async function signedInUser () {
  try {
    return await rest.me()
  } catch (error) {
    if (error.code === 401 || error.code === 403) return null
    throw error
  }
}

function signInPage (message) {
  const input = h('input', { id: 'token', name: 'token', type: 'password', required: true, autocomplete: 'off', 'aria-describedby': 'token-help' })
  const error = h('p', { class: 'error', role: 'alert' }, message || '')
  const form = h('form', {
    class: 'signin card',
    'aria-labelledby': 'signin-title',
    onsubmit: async (event) => {
      event.preventDefault()
      try {
        await exchangeToken(input.value.trim())
        await route()
      } catch (e) {
        fill(error, `Sign-in failed: ${e.message}`)
      }
    }
  },
  h('h1', { id: 'signin-title' }, 'Sign in to collab'),
  h('label', { for: 'token' }, 'Access token'),
  input,
  h('p', { id: 'token-help', class: 'hint' }, 'Ask an admin for a token (collab token issue --user you@example.com). It is traded for a session cookie and not kept in the page.'),
  error,
  h('button', { type: 'submit', class: 'primary' }, 'Sign in'))
  fill(app, h('main', { class: 'center' }, form))
  input.focus()
}

async function signOut () {
  try {
    await rest.closeSession()
  } catch {}
  navigate('/')
}

export function navigate (path) {
  history.pushState(null, '', path)
  route()
}

async function route () {
  const match = location.pathname.match(/^\/d\/([A-Za-z0-9_-]{1,64})(?:\/([A-Za-z0-9_-]{1,64}))?\/?$/)
  if (match && current && current.documentId === match[1] && match[2]) {
    current.openSection(match[2]) // another section of the open document
    return
  }
  if (current) {
    current.close()
    current = null
  }
  const url = new URL(location.href)
  const token = url.searchParams.get('token')
  if (token) {
    url.searchParams.delete('token')
    history.replaceState(null, '', url.pathname + url.search + url.hash)
    try {
      await exchangeToken(token)
    } catch (e) {
      return signInPage(`That link's token was refused: ${e.message}`)
    }
  }
  const me = await signedInUser()
  if (me === null) return signInPage()
  const shell = { me, rest, navigate, signOut }
  if (match) {
    current = openDocument(app, shell, match[1], match[2] || null)
  } else {
    current = documentList(app, shell)
  }
}

window.addEventListener('popstate', route)
document.addEventListener('click', (event) => {
  const link = event.target.closest('a[data-route]')
  if (!link || event.metaKey || event.ctrlKey || event.shiftKey || event.button !== 0) return
  event.preventDefault()
  navigate(link.getAttribute('href'))
})
route().catch((e) => toast(`Could not load: ${e.message}`, 'error'))
