//! One logging macro per level, with `format!`-style arguments, like `log`'s.

/// Logs at DEBUG (`log`'s `Trace`): `debug!("x = {x}")`.
#[macro_export]
macro_rules! debug {
    (target: $target:expr, $($arg:tt)+) => {
        $crate::log::log!(target: $target, $crate::log::Level::Trace, $($arg)+)
    };
    ($($arg:tt)+) => {
        $crate::log::log!($crate::log::Level::Trace, $($arg)+)
    };
}

/// Logs at VERBOSE (`log`'s `Debug`): `verbose!("x = {x}")`.
#[macro_export]
macro_rules! verbose {
    (target: $target:expr, $($arg:tt)+) => {
        $crate::log::log!(target: $target, $crate::log::Level::Debug, $($arg)+)
    };
    ($($arg:tt)+) => {
        $crate::log::log!($crate::log::Level::Debug, $($arg)+)
    };
}

/// Logs at NOTICE (`log`'s `Info`): `notice!("x = {x}")`.
#[macro_export]
macro_rules! notice {
    (target: $target:expr, $($arg:tt)+) => {
        $crate::log::log!(target: $target, $crate::log::Level::Info, $($arg)+)
    };
    ($($arg:tt)+) => {
        $crate::log::log!($crate::log::Level::Info, $($arg)+)
    };
}

/// Logs at WARNING (`log`'s `Warn`): `warning!("x = {x}")`.
#[macro_export]
macro_rules! warning {
    (target: $target:expr, $($arg:tt)+) => {
        $crate::log::log!(target: $target, $crate::log::Level::Warn, $($arg)+)
    };
    ($($arg:tt)+) => {
        $crate::log::log!($crate::log::Level::Warn, $($arg)+)
    };
}

/// Logs at ERROR (`log`'s `Error`): `error!("x = {x}")`.
#[macro_export]
macro_rules! error {
    (target: $target:expr, $($arg:tt)+) => {
        $crate::log::log!(target: $target, $crate::log::Level::Error, $($arg)+)
    };
    ($($arg:tt)+) => {
        $crate::log::log!($crate::log::Level::Error, $($arg)+)
    };
}

/// Logs at FATAL (`log`'s `Error`, with the key `pgq_level = "FATAL"`):
/// `fatal!("x = {x}")`. Key-values of your own are not supported here.
#[macro_export]
macro_rules! fatal {
    (target: $target:expr, $($arg:tt)+) => {
        $crate::log::log!(
            target: $target, $crate::log::Level::Error, pgq_level = "FATAL"; $($arg)+
        )
    };
    ($($arg:tt)+) => {
        $crate::log::log!(
            $crate::log::Level::Error, pgq_level = "FATAL"; $($arg)+
        )
    };
}
