// The review (approvals) panel, the revision history, and the notifications bell.
import { h, fill, when, toast } from './dom.js'

export function reviewPanel (page) {
  const { rest, documentId } = page
  const requests = h('div', { class: 'requests', 'data-testid': 'approvals' })
  const workflow = h('select', { id: 'workflow', 'aria-label': 'Approval workflow' })
  const form = h('form', {
    class: 'request-review',
    onsubmit: async (event) => {
      event.preventDefault()
      if (!workflow.value) return toast('No workflow to choose (an admin creates them).', 'error')
      try {
        await rest.requestApproval(documentId, workflow.value)
        toast('Review requested: the document is read-only until it is decided.')
        refresh()
        page.reload()
      } catch (e) {
        toast(`Could not request a review: ${e.message}`, 'error')
      }
    }
  }, h('label', { for: 'workflow' }, 'Request review with'), workflow, h('button', { type: 'submit', class: 'primary' }, 'Request review'))

  async function decide (request, step, decision) {
    const comment = decision === 'reject' ? prompt('Why? (optional)') || undefined : undefined
    try {
      await rest.decide(request.id, step.stepNumber, decision, comment)
      refresh()
      page.reload()
    } catch (e) {
      toast(`Decision refused: ${e.message}`, 'error')
    }
  }

  function renderRequest (request) {
    return h('article', { class: 'request' },
      h('p', {}, h('strong', {}, `Request by ${request.requestor?.name || 'someone'}`), ` · ${request.status} · ${when(request.createdAt)}`),
      h('ol', { class: 'chain', 'aria-label': 'Approval chain' }, request.steps.map((step) => h('li', { class: `step step-${step.status}` },
        `Step ${step.stepNumber} (${step.requiredRole}): ${step.status}`,
        step.reviewer ? ` by ${step.reviewer.name}` : '',
        step.comment ? h('q', {}, step.comment) : null,
        request.status === 'pending' && step.stepNumber === request.currentStep
          ? [h('button', { type: 'button', onclick: () => decide(request, step, 'approve') }, 'Approve'),
              h('button', { type: 'button', onclick: () => decide(request, step, 'reject') }, 'Reject')]
          : null))))
  }

  async function refresh () {
    try {
      const [flows, mine] = await Promise.all([rest.workflows(), rest.approvals(documentId)])
      const chosen = workflow.value
      fill(workflow, flows.items.map((w) => h('option', { value: w.id }, w.name)))
      if (chosen) workflow.value = chosen
      fill(requests, mine.items.length ? mine.items.map(renderRequest) : h('p', { class: 'muted' }, 'No review requested yet.'))
    } catch (e) {
      fill(requests, h('p', { class: 'error' }, `Could not load the reviews: ${e.message}`))
    }
  }
  refresh()
  return { element: h('div', {}, h('h2', { class: 'visually-hidden' }, 'Review'), form, requests), refresh }
}

export function historyPanel (page) {
  const { rest, documentId } = page
  const list = h('ol', { class: 'revisions', 'data-testid': 'revisions' })
  const diff = h('div', { class: 'diff', 'aria-live': 'polite' })
  let items = []

  async function refresh () {
    try {
      items = (await rest.revisions(documentId, { limit: 50 })).items
      fill(list, items.length ? items.map((r, i) => h('li', {},
        h('p', {}, h('strong', {}, `v${r.version}`), ` ${when(r.timestamp)}`),
        h('p', { class: 'muted' }, r.changes || ''),
        i + 1 < items.length ? h('button', { type: 'button', onclick: () => showDiff(items[i + 1], r) }, 'Diff') : null,
        h('button', { type: 'button', onclick: () => restore(r) }, 'Restore'))) : h('li', { class: 'muted' }, 'No revisions yet.'))
    } catch (e) {
      fill(list, h('li', { class: 'error' }, `Could not load revisions: ${e.message}`))
    }
  }

  async function showDiff (from, to) {
    try {
      const answer = await rest.diff(documentId, from.revisionId, to.revisionId)
      fill(diff, h('h3', {}, `v${from.version} → v${to.version}`), answer.sections.filter((s) => s.status !== 'unchanged').map((s) =>
        h('section', {}, h('h4', {}, `${s.titleAfter || s.titleBefore} (${s.status})`),
          h('pre', {}, s.diff.split('\n').map((line) => h('span', { class: diffClass(line) }, line + '\n'))))))
    } catch (e) {
      toast(`No diff: ${e.message}`, 'error')
    }
  }

  async function restore (revision) {
    if (!confirm(`Restore v${revision.version}? Everyone's editors follow.`)) return
    try {
      await rest.restore(documentId, revision.revisionId)
      toast(`Restored v${revision.version}`)
      refresh()
    } catch (e) {
      toast(`Could not restore: ${e.message}`, 'error')
    }
  }

  const save = h('button', {
    type: 'button',
    onclick: async () => {
      try {
        await rest.saveRevision(documentId)
        refresh()
      } catch (e) {
        toast(`Could not save a revision: ${e.message}`, 'error')
      }
    }
  }, 'Save a revision now')
  refresh()
  return { element: h('div', {}, h('h2', { class: 'visually-hidden' }, 'History'), save, list, diff), refresh }
}

export function notificationsBell (provider) {
  const count = h('span', { class: 'count', 'data-testid': 'unread' }, '0')
  const panel = h('div', { class: 'notifications', id: 'notifications', hidden: true, role: 'region', 'aria-label': 'Notifications' })
  const button = h('button', {
    type: 'button',
    class: 'bell',
    'aria-expanded': 'false',
    'aria-controls': 'notifications',
    onclick: () => {
      panel.hidden = !panel.hidden
      button.setAttribute('aria-expanded', String(!panel.hidden))
    }
  }, bellIcon(), h('span', { class: 'visually-hidden' }, 'Notifications, unread: '), count)
  const notes = provider.notifications
  function render () {
    fill(count, String(notes.unread))
    count.hidden = notes.unread === 0
    fill(panel,
      h('button', { type: 'button', class: 'link', onclick: () => notes.markAllRead().catch((e) => toast(e.message, 'error')) }, 'Mark all read'),
      h('ul', {}, notes.items.slice(0, 30).map((n) => h('li', { class: n.read ? 'read' : 'unread' },
        h('strong', {}, n.title), h('p', {}, n.message), h('time', { datetime: n.createdAt }, when(n.createdAt))))))
  }
  notes.on('change', render)
  provider.on('event', (e) => { if (e.type === 'notification') toast(e.notification.title) })
  notes.load().then(() => { count.dataset.loaded = 'true' }, () => {})
  render()
  return { element: h('div', { class: 'bell-wrap' }, button, panel), destroy () {} }
}

function bellIcon () {
  const svg = document.createElementNS('http://www.w3.org/2000/svg', 'svg')
  svg.setAttribute('viewBox', '0 0 24 24')
  svg.setAttribute('width', '18')
  svg.setAttribute('height', '18')
  svg.setAttribute('aria-hidden', 'true')
  const path = document.createElementNS('http://www.w3.org/2000/svg', 'path')
  path.setAttribute('d', 'M12 22a2.5 2.5 0 0 0 2.45-2h-4.9A2.5 2.5 0 0 0 12 22Zm7-6V11a7 7 0 0 0-5.5-6.84V3a1.5 1.5 0 0 0-3 0v1.16A7 7 0 0 0 5 11v5l-2 2v1h18v-1Z')
  path.setAttribute('fill', 'currentColor')
  svg.append(path)
  return svg
}

function diffClass (line) {
  if (line.startsWith('+++') || line.startsWith('---') || line.startsWith('@@')) return 'hunk'
  if (line.startsWith('+')) return 'add'
  if (line.startsWith('-')) return 'del'
  return ''
}
