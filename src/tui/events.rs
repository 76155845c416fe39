//! Terminal events to actions: keys (arrows and vim keys), mouse wheel and clicks, resizes.
//! While a search is typed, printable keys go into the query.

use ratatui::crossterm::event::{
    Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers, MouseButton, MouseEventKind,
};

use super::state::{Action, Screen};

/// The action an event asks for; `editing` is true while a search is typed.
pub fn action(event: &Event, editing: bool) -> Option<Action> {
    match event {
        Event::Key(key) if key.kind != KeyEventKind::Release => {
            if editing {
                editing_key(key)
            } else {
                key_action(key)
            }
        }
        Event::Mouse(m) => match m.kind {
            MouseEventKind::ScrollUp => Some(Action::Wheel {
                up: true,
                column: m.column,
                row: m.row,
            }),
            MouseEventKind::ScrollDown => Some(Action::Wheel {
                up: false,
                column: m.column,
                row: m.row,
            }),
            MouseEventKind::Down(MouseButton::Left) => Some(Action::Click {
                column: m.column,
                row: m.row,
            }),
            _ => None,
        },
        Event::Resize(w, h) => Some(Action::Resize(*w, *h)),
        _ => None,
    }
}

fn is_ctrl_c(key: &KeyEvent) -> bool {
    key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c')
}

fn editing_key(key: &KeyEvent) -> Option<Action> {
    if is_ctrl_c(key) {
        return Some(Action::Quit);
    }
    Some(match key.code {
        KeyCode::Char(c) => Action::Input(c),
        KeyCode::Backspace => Action::Erase,
        KeyCode::Enter | KeyCode::Tab => Action::Accept,
        KeyCode::Esc => Action::Back,
        KeyCode::Up => Action::Up,
        KeyCode::Down => Action::Down,
        KeyCode::PageUp => Action::PageUp,
        KeyCode::PageDown => Action::PageDown,
        _ => return None,
    })
}

fn key_action(key: &KeyEvent) -> Option<Action> {
    if is_ctrl_c(key) {
        return Some(Action::Quit);
    }
    Some(match key.code {
        KeyCode::Char('q') => Action::Quit,
        KeyCode::Esc => Action::Back,
        KeyCode::Up | KeyCode::Char('k') => Action::Up,
        KeyCode::Down | KeyCode::Char('j') => Action::Down,
        KeyCode::PageUp => Action::PageUp,
        KeyCode::PageDown => Action::PageDown,
        KeyCode::Home | KeyCode::Char('g') => Action::Home,
        KeyCode::End | KeyCode::Char('G') => Action::End,
        KeyCode::Left | KeyCode::Char('h') => Action::Left,
        KeyCode::Right | KeyCode::Char('l') => Action::Right,
        KeyCode::Enter | KeyCode::Char(' ') => Action::Activate,
        KeyCode::Tab | KeyCode::BackTab => Action::NextPane,
        KeyCode::Char('/') => Action::Search,
        KeyCode::Char('s') => Action::Sort,
        KeyCode::Char('S') => Action::Reverse,
        KeyCode::Char('f') => Action::Filter,
        KeyCode::Char('t') => Action::Tree,
        KeyCode::Char('d') => Action::Delta,
        KeyCode::Char('w') => Action::Restore,
        KeyCode::Char('?') => Action::Help,
        KeyCode::Char(c) => {
            let screen = Screen::ALL.into_iter().find(|s| s.key() == c)?;
            Action::Show(screen)
        }
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(code: KeyCode) -> Event {
        Event::Key(KeyEvent::new(code, KeyModifiers::NONE))
    }

    #[test]
    fn vim_keys_and_arrows_agree() {
        assert_eq!(action(&key(KeyCode::Char('j')), false), Some(Action::Down));
        assert_eq!(action(&key(KeyCode::Down), false), Some(Action::Down));
        assert_eq!(
            action(&key(KeyCode::Char('3')), false),
            Some(Action::Show(Screen::Detail))
        );
    }

    #[test]
    fn typing_a_search_takes_letters() {
        assert_eq!(
            action(&key(KeyCode::Char('q')), true),
            Some(Action::Input('q'))
        );
        assert_eq!(action(&key(KeyCode::Char('q')), false), Some(Action::Quit));
        let ctrl_c = Event::Key(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL));
        assert_eq!(action(&ctrl_c, true), Some(Action::Quit));
    }
}
