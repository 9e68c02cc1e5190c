// The "Merge" dialog (issue 22): moves the open conversation's messages into another
// conversation of the same customer (POST /conversation/{id}/merge); the merged one is then
// resolved and reads from the other.

import { get, post } from './api.js';
import { h, listTime, personName, toast } from './dom.js';

/** Opens the dialog for `view` (a ConversationView); `onMerged(target)` gets the target's
 * view after a merge. */
export async function openMergeDialog(view, { onMerged }) {
  let list;
  try {
    list = await get(`/conversation/conversation-page-list?userId=${view.user.userId}&limit=50`);
  } catch (e) {
    toast(`Could not list the customer's conversations: ${e.message}`, 'error');
    return;
  }
  const others = list.data.filter((c) => c.conversationId !== view.conversationId && c.mergedInto == null);
  const error = h('p', { class: 'form-error', role: 'alert', hidden: true });
  const choices = others.map((c, i) =>
    h(
      'label',
      { class: 'merge-choice' },
      h('input', { type: 'radio', name: 'merge-into', value: String(c.conversationId), checked: i === 0 }),
      h(
        'span',
        {},
        h('strong', {}, `Conversation #${c.conversationId} · ${c.status}`),
        ' ',
        h('span', { class: 'muted small' }, listTime(c.lastUpdateTime)),
        h('span', { class: 'merge-preview muted small' }, c.lastMessage?.content || ''),
      ),
    ),
  );
  const merge = h('button', { type: 'submit', class: 'primary', disabled: others.length === 0 }, 'Merge');
  const dialog = h(
    'dialog',
    { class: 'merge-dialog', 'aria-labelledby': 'merge-title' },
    h(
      'form',
      { method: 'dialog', class: 'merge-card' },
      h('h2', { id: 'merge-title' }, 'Merge into another conversation'),
      h(
        'p',
        {},
        `The messages of this conversation with ${personName(view.user)} move into the one you pick, in time order; this one is then resolved and shows the other's messages.`,
      ),
      others.length
        ? h('fieldset', {}, h('legend', { class: 'visually-hidden' }, 'Merge into'), choices)
        : h('p', { class: 'muted' }, `${personName(view.user)} has no other conversation.`),
      error,
      h('div', { class: 'security-actions' }, merge, h('button', { type: 'button', class: 'ghost', onclick: () => dialog.close() }, 'Cancel')),
    ),
  );
  dialog.addEventListener('close', () => dialog.remove());
  dialog.querySelector('form').addEventListener('submit', async (e) => {
    e.preventDefault();
    const into = Number(dialog.querySelector('input[name=merge-into]:checked')?.value);
    if (!into) return;
    merge.disabled = true;
    try {
      const target = await post(`/conversation/${view.conversationId}/merge`, { intoConversationId: into });
      dialog.close();
      toast(`Merged into conversation #${target.conversationId}`);
      onMerged(target);
    } catch (ex) {
      error.textContent = ex.code === 'already_merged' ? 'One of them was merged meanwhile.' : ex.message;
      error.hidden = false;
      merge.disabled = false;
    }
  });
  document.body.append(dialog);
  dialog.showModal();
}
