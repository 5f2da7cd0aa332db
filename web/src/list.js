// The document list: search, filter by status, new document.
import { h, fill, when, toast } from './dom.js'
import { header } from './header.js'

const STATUSES = ['', 'draft', 'review', 'approved', 'published', 'archived']

export function documentList (app, shell) {
  const { rest, navigate } = shell
  const results = h('ul', { class: 'doc-list', 'aria-live': 'polite', 'data-testid': 'documents' })
  const search = h('input', { id: 'search', type: 'search', placeholder: 'Search titles and content', 'aria-label': 'Search documents' })
  const status = h('select', { id: 'status-filter', 'aria-label': 'Filter by status' },
    STATUSES.map((s) => h('option', { value: s }, s || 'any status')))
  const title = h('input', { id: 'new-title', required: true, maxlength: 300, placeholder: 'Title of the new document' })
  let timer = null

  async function load () {
    try {
      const page = await rest.documents({ q: search.value.trim(), status: status.value, limit: 100 })
      fill(results, page.items.length === 0
        ? h('li', { class: 'empty' }, 'No documents.')
        : page.items.map((d) => h('li', {},
          h('a', { href: `/d/${d.documentId}`, 'data-route': true, class: 'doc-link' }, d.title),
          h('span', { class: `badge status-${d.status}` }, d.status),
          h('span', { class: 'muted' }, ` updated ${when(d.updatedAt)} · ${d.wordCount ?? 0} words`))))
    } catch (e) {
      fill(results, h('li', { class: 'error' }, `Could not list documents: ${e.message}`))
    }
  }

  const create = h('form', {
    class: 'new-doc',
    'aria-label': 'New document',
    onsubmit: async (event) => {
      event.preventDefault()
      try {
        const doc = await rest.createDocument({ title: title.value.trim(), sections: [{ title: 'Introduction', content: '' }] })
        navigate(`/d/${doc.documentId}`)
      } catch (e) {
        toast(`Could not create it: ${e.message}`, 'error')
      }
    }
  }, h('label', { for: 'new-title' }, 'New document'), title, h('button', { type: 'submit', class: 'primary' }, 'Create'))

  search.addEventListener('input', () => {
    clearTimeout(timer)
    timer = setTimeout(load, 200)
  })
  status.addEventListener('change', load)
  fill(app, header(shell, null), h('main', { class: 'list-page' },
    h('h1', {}, 'Documents'),
    h('div', { class: 'toolbar', role: 'search' }, search, status),
    results, create))
  load()
  return { close: () => clearTimeout(timer) }
}
