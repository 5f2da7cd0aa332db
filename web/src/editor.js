// The document page: outline, the section's CodeMirror editor bound to its Y.Text, presence,
// locks, read-only states, connection state and the side panels.
import * as Y from 'yjs'
import { CollabProvider } from '@collab/client'
import { h, fill, colorOf, initials, toast } from './dom.js'
import { header } from './header.js'
import { createEditor } from './codemirror.js'
import { commentsPanel } from './comments.js'
import { reviewPanel, historyPanel, notificationsBell } from './panels.js'

function socketUrl () {
  return `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/ws`
}

function sectionsOf (map) {
  const list = []
  map.forEach((value, id) => {
    const title = value instanceof Y.Map ? value.get('title') : value && value.title
    const order = value instanceof Y.Map ? value.get('order') : value && value.order
    list.push({ id, title: title ?? id, order: typeof order === 'number' ? order : 0 })
  })
  return list.sort((a, b) => a.order - b.order || (a.id < b.id ? -1 : 1))
}

function slug (title) {
  const base = title.toLowerCase().normalize('NFKD').replace(/[^a-z0-9]+/g, '-').replace(/^-|-$/g, '').slice(0, 40)
  return `${base || 'section'}-${Math.random().toString(36).slice(2, 6)}`
}

export function openDocument (app, shell, documentId, sectionId) {
  const { me, rest, navigate } = shell
  const outlineDoc = new Y.Doc()
  const outline = new CollabProvider(socketUrl(), documentId, outlineDoc, { rest })
  const sections = outlineDoc.getMap('sections')
  const page = { me, rest, outline, documentId, sectionId, record: null, section: null }
  const cleanups = []

  const connection = h('span', { class: 'connection', role: 'status', 'aria-live': 'polite', 'data-testid': 'connection' }, 'Connecting…')
  const presence = h('ul', { class: 'presence', 'aria-label': 'People in this document', 'data-testid': 'presence' })
  const titleEl = h('h1', { class: 'doc-title', 'data-testid': 'doc-title' }, documentId)
  const statusEl = h('span', { class: 'badge', 'data-testid': 'doc-status' }, '')
  const outlineList = h('ol', { class: 'outline-list', 'data-testid': 'outline' })
  const lockBar = h('div', { class: 'lockbar', 'data-testid': 'lockbar' })
  const banner = h('p', { class: 'banner', role: 'status', 'data-testid': 'readonly-banner', hidden: true })
  const editorHost = h('div', { class: 'editor-host' })
  const sectionTitle = h('h2', { class: 'section-title', id: 'section-title' }, '')
  const bell = notificationsBell(outline)
  const comments = commentsPanel(page)
  const review = reviewPanel(page)
  const historyTab = historyPanel(page)
  const tabs = sidebarTabs([['Comments', comments.element], ['Review', review.element], ['History', historyTab.element]])

  fill(app,
    header(shell, [titleEl, statusEl, connection, presence, bell.element]),
    h('div', { class: 'doc-layout' },
      h('nav', { class: 'outline', 'aria-label': 'Sections' },
        h('h2', {}, 'Outline'), outlineList,
        h('form', { class: 'add-section', id: 'add-section', onsubmit: addSection },
          h('label', { for: 'new-section', class: 'visually-hidden' }, 'New section title'),
          h('input', { id: 'new-section', placeholder: 'New section', maxlength: 200 }),
          h('button', { type: 'submit' }, 'Add')),
        h('a', { class: 'export', href: `/api/documents/${documentId}/export?format=markdown`, download: `${documentId}.md` }, 'Export markdown')),
      h('main', { class: 'editor-column', 'aria-labelledby': 'section-title' }, sectionTitle, lockBar, banner, editorHost),
      h('aside', { class: 'sidebar', 'aria-label': 'Comments, review and history' }, tabs)))

  function addSection (event) {
    event.preventDefault()
    const input = event.target.querySelector('input')
    const title = input.value.trim()
    if (!title) return
    const list = sectionsOf(sections)
    const id = slug(title)
    outlineDoc.transact(() => {
      const entry = new Y.Map()
      entry.set('title', title)
      entry.set('order', list.length ? list[list.length - 1].order + 1 : 0)
      sections.set(id, entry)
    })
    input.value = ''
    navigate(`/d/${documentId}/${id}`)
  }

  function renameSection (id, current) {
    const title = prompt('Section title', current)
    if (!title || !title.trim()) return
    const entry = sections.get(id)
    if (entry instanceof Y.Map) entry.set('title', title.trim())
  }

  function moveSection (id, delta) {
    const list = sectionsOf(sections)
    const index = list.findIndex((s) => s.id === id)
    const target = index + delta
    if (index < 0 || target < 0 || target >= list.length) return
    const neighbour = list[target]
    const beyond = list[target + delta]
    const order = beyond === undefined ? neighbour.order + delta : (neighbour.order + beyond.order) / 2
    const entry = sections.get(id)
    if (entry instanceof Y.Map) entry.set('order', order)
  }

  function removeSection (id, title) {
    if (!confirm(`Remove the section "${title}"?`)) return
    sections.delete(id)
    if (page.sectionId === id) navigate(`/d/${documentId}`)
  }

  function renderOutline () {
    const list = sectionsOf(sections)
    const readOnly = outline.readOnly || (page.record !== null && page.record.status === 'review')
    fill(outlineList, list.map((s, i) => h('li', { class: s.id === page.sectionId ? 'current' : '' },
      h('a', { href: `/d/${documentId}/${s.id}`, 'data-route': true, 'aria-current': s.id === page.sectionId ? 'page' : false }, s.title),
      whoIsIn(s.id),
      lockOf(s.id) ? h('span', { class: 'lock-icon', title: `Locked by ${lockOf(s.id).ownerName}`, 'aria-label': `locked by ${lockOf(s.id).ownerName}` }, '🔒') : null,
      readOnly ? null : h('span', { class: 'outline-actions' },
        h('button', { type: 'button', class: 'icon', 'aria-label': `Move ${s.title} up`, disabled: i === 0, onclick: () => moveSection(s.id, -1) }, '↑'),
        h('button', { type: 'button', class: 'icon', 'aria-label': `Move ${s.title} down`, disabled: i === list.length - 1, onclick: () => moveSection(s.id, 1) }, '↓'),
        h('button', { type: 'button', class: 'icon', 'aria-label': `Rename ${s.title}`, onclick: () => renameSection(s.id, s.title) }, '✎'),
        h('button', { type: 'button', class: 'icon', 'aria-label': `Remove ${s.title}`, onclick: () => removeSection(s.id, s.title) }, '✕')))))
    app.querySelector('#add-section').hidden = readOnly
    const current = list.find((s) => s.id === page.sectionId)
    if (current) fill(sectionTitle, current.title)
    if (page.sectionId === null && list.length > 0) {
      history.replaceState(null, '', `/d/${documentId}/${list[0].id}`)
      openSection(list[0].id)
    }
  }

  function whoIsIn (sectionId) {
    const here = [...outline.presence.users.values()].filter((u) => u.sections.has(sectionId))
    if (here.length === 0) return null
    const names = here.map((u) => u.name || 'someone').join(', ')
    return h('span', { class: 'here', role: 'img', title: `Here: ${names}`, 'aria-label': `here: ${names}` },
      here.map((u) => h('span', { class: 'dot', style: `background:${colorOf(u.userId)}`, 'aria-hidden': 'true' })))
  }

  function lockOf (section) {
    return outline.locks.bySection.get(section)
  }

  function renderPresence () {
    const users = [...outline.presence.users.values()]
    fill(presence, users.map((u) => {
      const where = [...u.sections].filter((s) => s !== null)
      const label = `${u.name || 'someone'}${where.length ? ` in ${where.map(sectionName).join(', ')}` : ''}`
      return h('li', { class: 'avatar', style: `background:${colorOf(u.userId)}`, title: label, 'aria-label': label, 'data-user': u.name }, initials(u.name))
    }))
  }

  function sectionName (id) {
    const entry = sections.get(id)
    return (entry instanceof Y.Map && entry.get('title')) || id
  }

  function renderConnection () {
    const section = page.section
    const provider = section ? section.provider : outline
    let text = 'Connecting…'
    let state = 'connecting'
    // The section's text and the outline (titles, order) both count.
    const saved = provider.saved && outline.saved
    const unsaved = provider.unsaved + (provider === outline ? 0 : outline.unsaved)
    if (provider.wsconnected && provider.synced) {
      state = saved ? 'saved' : 'saving'
      text = saved ? 'All changes saved' : 'Saving…'
    } else if (provider.everSynced || navigator.onLine === false) {
      // Lost the connection (or never had the network): y-websocket keeps reconnecting.
      state = 'offline'
      text = saved ? 'Offline, reconnecting…' : `Offline: ${unsaved} unsaved edit(s) kept, sent on reconnect`
    }
    connection.dataset.state = state
    fill(connection, text)
  }

  function editability () {
    const section = page.section
    if (!section) return { editable: false, reason: '' }
    const lock = lockOf(section.id)
    if (page.record && page.record.status === 'review') return { editable: false, reason: 'This document is in review: it is read-only until the review ends.' }
    if (lock && lock.owner !== me.id) return { editable: false, reason: `Locked by ${lock.ownerName || 'another user'}: read-only until they unlock it.` }
    if (section.provider.readOnly) return { editable: false, reason: 'Read-only: you may view (or comment) but not edit this document.' }
    return { editable: true, reason: '' }
  }

  function renderLock () {
    const section = page.section
    if (!section) return fill(lockBar)
    const lock = lockOf(section.id)
    const mayEdit = !section.provider.readOnly
    let content
    if (lock && lock.owner === me.id) {
      content = [h('span', {}, '🔒 You hold the lock of this section'), h('button', { type: 'button', onclick: () => outline.locks.unlock(section.id) }, 'Unlock')]
    } else if (lock) {
      content = [h('span', { 'data-testid': 'lock-holder' }, `🔒 Locked by ${lock.ownerName || lock.owner}`)]
    } else if (mayEdit) {
      content = [h('button', { type: 'button', onclick: () => outline.locks.lock(section.id).catch((e) => toast(e.message, 'error')) }, 'Lock section')]
    } else {
      content = []
    }
    fill(lockBar, content)
    const { editable, reason } = editability()
    section.editor.setEditable(editable)
    banner.hidden = editable
    fill(banner, reason)
  }

  function openSection (id) {
    if (page.section && page.section.id === id) return
    closeSection()
    page.sectionId = id
    const doc = new Y.Doc()
    const provider = new CollabProvider(socketUrl(), `${documentId}/${id}`, doc, { rest })
    provider.awareness.setLocalStateField('user', { name: me.name || me.email, color: colorOf(me.id) })
    // Carets show the name the server verified (`collab.name`), not the one a client claims
    // (docs/protocol.md, "Awareness"): set before y-codemirror's listener reads the states.
    provider.awareness.on('change', () => {
      provider.awareness.getStates().forEach((state, clientId) => {
        if (clientId === doc.clientID || !state.collab || !state.collab.name) return
        state.user = { ...(state.user || {}), name: state.collab.name, color: colorOf(state.collab.userId) }
      })
    })
    const ytext = doc.getText('content')
    const editor = createEditor(editorHost, ytext, provider.awareness, {
      label: `Text of section ${sectionName(id)}`,
      onSelection: (from, to) => comments.selectionChanged(from, to)
    })
    page.section = { id, doc, provider, ytext, editor }
    const refresh = () => {
      renderConnection()
      renderLock()
    }
    provider.on('status', refresh)
    provider.on('sync', (synced) => {
      if (synced) provider.everSynced = true
      refresh()
    })
    provider.on('saved', refresh)
    provider.on('event', (e) => { if (e.type === 'joined' || e.type === 'access') refresh() })
    // Told after an edit of ours was refused; also sent when the socket turns read-only.
    provider.on('denied', (reason) => { if (!provider.saved) toast(`Not saved: ${reason}`, 'error') })
    comments.sectionOpened(page.section)
    renderOutline()
    refresh()
  }

  function closeSection () {
    const section = page.section
    if (!section) return
    page.section = null
    section.editor.destroy()
    section.provider.destroy()
    section.provider.awareness.destroy()
    section.doc.destroy()
  }

  async function loadRecord () {
    try {
      page.record = await rest.document(documentId)
      fill(titleEl, page.record.title)
      document.title = `${page.record.title} · collab`
      fill(statusEl, page.record.status)
      statusEl.className = `badge status-${page.record.status}`
      renderOutline()
      renderLock()
    } catch (e) {
      toast(`Could not read the document: ${e.message}`, 'error')
    }
  }
  page.reload = loadRecord

  sections.observeDeep(renderOutline)
  outline.locks.on('change', () => { renderOutline(); renderLock() })
  outline.presence.on('change', () => {
    renderPresence()
    renderOutline()
  })
  outline.on('status', renderConnection)
  outline.on('saved', renderConnection)
  outline.on('event', (e) => {
    if (e.type === 'joined' || e.type === 'access') renderOutline()
    if (e.type === 'approval' || (e.type === 'access' && 'inReview' in e)) loadRecord()
  })
  outline.approvals.on('change', () => review.refresh())
  outline.once('sync', () => {
    outline.presence.load().catch(() => {})
    renderOutline()
  })
  if (sectionId) openSection(sectionId)
  loadRecord()
  cleanups.push(() => {
    closeSection()
    bell.destroy()
    outline.destroy()
    outline.awareness.destroy()
    outlineDoc.destroy()
  })
  return { documentId, openSection, close: () => cleanups.forEach((f) => f()) }
}

function sidebarTabs (panes) {
  const tablist = h('div', { role: 'tablist', 'aria-label': 'Side panels', class: 'tabs' })
  const buttons = []
  const panels = []
  const select = (index, focus) => {
    buttons.forEach((b, i) => {
      b.setAttribute('aria-selected', String(i === index))
      b.tabIndex = i === index ? 0 : -1
      panels[i].hidden = i !== index
    })
    if (focus) buttons[index].focus()
  }
  panes.forEach(([name, element], i) => {
    const id = `tab-${name.toLowerCase()}`
    const button = h('button', { type: 'button', role: 'tab', id, 'aria-controls': `${id}-panel`, onclick: () => select(i) }, name)
    button.addEventListener('keydown', (event) => {
      if (event.key === 'ArrowRight') select((i + 1) % panes.length, true)
      if (event.key === 'ArrowLeft') select((i + panes.length - 1) % panes.length, true)
    })
    buttons.push(button)
    panels.push(h('div', { role: 'tabpanel', id: `${id}-panel`, 'aria-labelledby': id, class: 'tabpanel' }, element))
  })
  tablist.append(...buttons)
  select(0)
  return [tablist, ...panels]
}
