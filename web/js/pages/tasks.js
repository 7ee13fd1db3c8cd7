// Tasks: the sample domain. Projects (list, create), the tasks of the chosen project by status,
// a task form to create and edit (title, description, status, assignee, due date).

import { api, query } from '../api.js';
import { errorBox, field, h, replace, select, showProblem } from '../dom.js';

const STATUSES = [['todo', 'To do'], ['in_progress', 'In progress'], ['done', 'Done']];

async function all(path) {
  const page = await api(`${path}${path.includes('?') ? '&' : '?'}limit=500`);
  return page.items || [];
}

export async function render(main, { announce }) {
  let projects = [];
  let users = [];
  let tasks = [];
  let current = null;
  let editing = null;

  const projectBox = errorBox();
  const projectName = h('input', { name: 'name', required: true, maxlength: 200 });
  const projectDesc = h('input', { name: 'description' });
  const projectForm = h('form', { class: 'card', 'aria-labelledby': 'np-h' },
    h('h2', { id: 'np-h' }, 'New project'),
    h('div', { class: 'row' }, field('Name', projectName), field('Description', projectDesc),
      h('div', { class: 'field' }, h('button', { type: 'submit' }, 'Create project'))),
    projectBox);

  const projectPicker = h('select', { name: 'project', id: 'project-picker' });
  const board = h('div', { class: 'board', dataset: { testid: 'board' } });

  const taskBox = errorBox();
  const title = h('input', { name: 'title', required: true, maxlength: 500 });
  const description = h('textarea', { name: 'description', rows: 2 });
  const status = select('status', STATUSES, 'todo');
  const assignee = h('select', { name: 'assignee_id' });
  const due = h('input', { name: 'due_date', type: 'date' });
  const taskHeading = h('h2', { id: 'task-h' }, 'New task');
  const saveButton = h('button', { type: 'submit' }, 'Create task');
  const cancelButton = h('button', { type: 'button', class: 'secondary', hidden: true }, 'Cancel edit');
  const taskForm = h('form', { class: 'card', 'aria-labelledby': 'task-h' },
    taskHeading,
    h('div', { class: 'row' }, field('Title', title), field('Status', status), field('Assignee', assignee), field('Due date', due)),
    field('Description', description),
    taskBox,
    h('div', { class: 'row' }, saveButton, cancelButton));

  replace(main,
    h('h1', {}, 'Tasks'),
    h('div', { class: 'row' }, field('Project', projectPicker)),
    board,
    taskForm,
    projectForm);

  function userName(id) {
    const u = users.find((x) => x.id === id);
    return u ? (u.name || u.email) : '';
  }

  function renderPicker() {
    replace(projectPicker, projects.length
      ? projects.map((p) => h('option', { value: p.id, selected: current && p.id === current.id }, p.name))
      : h('option', { value: '' }, 'No project yet: create one below'));
    replace(assignee, h('option', { value: '' }, 'Nobody'),
      users.map((u) => h('option', { value: u.id }, u.name || u.email)));
  }

  function renderBoard() {
    replace(board, STATUSES.map(([key, label]) => {
      const mine = tasks.filter((t) => t.status === key);
      return h('section', { class: 'column', 'aria-label': label, dataset: { status: key } },
        h('h3', {}, `${label} (${mine.length})`),
        h('ul', {}, mine.map((t) => h('li', { class: 'task', dataset: { taskId: t.id } },
          h('strong', {}, t.title),
          t.assignee_id ? h('div', { class: 'hint' }, `Assigned to ${userName(t.assignee_id)}`) : null,
          t.due_date ? h('div', { class: 'hint' }, `Due ${t.due_date}`) : null,
          h('button', { type: 'button', class: 'secondary', onclick: () => edit(t), 'aria-label': `Edit ${t.title}` }, 'Edit')))));
    }));
  }

  function edit(task) {
    editing = task;
    taskHeading.textContent = `Edit task: ${task.title}`;
    title.value = task.title;
    description.value = task.description || '';
    status.value = task.status;
    assignee.value = task.assignee_id || '';
    due.value = task.due_date || '';
    saveButton.textContent = 'Save task';
    cancelButton.hidden = false;
    title.focus();
  }

  function resetTaskForm() {
    editing = null;
    taskForm.reset();
    showProblem(taskForm, taskBox, null);
    taskHeading.textContent = 'New task';
    saveButton.textContent = 'Create task';
    cancelButton.hidden = true;
  }

  async function loadTasks() {
    tasks = current ? await all(`/tasks${query({ project_id: current.id })}`) : [];
    renderBoard();
  }

  projectPicker.addEventListener('change', async () => {
    current = projects.find((p) => p.id === projectPicker.value) || null;
    resetTaskForm();
    await loadTasks();
  });
  cancelButton.addEventListener('click', resetTaskForm);

  projectForm.addEventListener('submit', async (e) => {
    e.preventDefault();
    showProblem(projectForm, projectBox, null);
    try {
      const body = { name: projectName.value.trim() };
      if (projectDesc.value.trim()) body.description = projectDesc.value.trim();
      const created = await api('/projects', { method: 'POST', body });
      projects.push(created);
      current = created;
      projectForm.reset();
      renderPicker();
      await loadTasks();
      announce(`Project ${created.name} created`);
    } catch (err) {
      showProblem(projectForm, projectBox, err);
    }
  });

  taskForm.addEventListener('submit', async (e) => {
    e.preventDefault();
    showProblem(taskForm, taskBox, null);
    if (!current && !editing) {
      showProblem(taskForm, taskBox, { message: 'Create or choose a project first.', errors: [] });
      return;
    }
    const body = {
      title: title.value.trim(),
      description: description.value.trim() || null,
      status: status.value,
      assignee_id: assignee.value || null,
      due_date: due.value || null,
    };
    try {
      if (editing) {
        await api(`/tasks/${editing.id}`, { method: 'PATCH', body });
        announce(`Task ${body.title} saved`);
      } else {
        await api('/tasks', { method: 'POST', body: { ...body, project_id: current.id } });
        announce(`Task ${body.title} created`);
      }
      resetTaskForm();
      await loadTasks();
    } catch (err) {
      showProblem(taskForm, taskBox, err);
    }
  });

  try {
    [projects, users] = await Promise.all([all('/projects'), all('/users').catch(() => [])]);
    current = projects[0] || null;
    renderPicker();
    await loadTasks();
  } catch (err) {
    board.replaceWith(h('p', { class: 'error', role: 'alert' }, err.message));
  }
}
